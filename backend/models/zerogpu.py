"""Hugging Face ZeroGPU: run each pipeline call under ``spaces.GPU(duration=…)``.

On a ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU`` and ships the ``spaces`` package) a GPU is attached only
while a ``spaces.GPU``-decorated function runs, in a forked worker process; CUDA must never be initialised in the
main process. So there the models stay on the CPU in the main process (see ``devices.plan_device``) and each call
moves its pipeline to CUDA inside the GPU function. The requested duration is estimated from the work (steps ×
pixels × pictures): ZeroGPU schedules short requests first, and a run longer than its duration is cut off.

Anywhere else (no variable, or no ``spaces`` package) ``on_gpu`` just calls the function: nothing changes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a GPU call may ask for. ZeroGPU refuses durations over its per-call limit, and a long request costs the
# visitor's daily quota up front; a call shorter than MIN_SECONDS gains no priority but risks being cut off while
# the weights are still being moved to the GPU.
MIN_SECONDS = 20
MAX_SECONDS = 120
# Fixed cost of a call: the worker process starts, CUDA initialises and the weights move to the GPU (SD 1.5 in
# fp16 is 2 GB, SDXL 7 GB).
OVERHEAD_SECONDS = 10
# Denoising throughput assumed for the estimate, in pixel-steps per second (width × height × steps × pictures).
# SD 1.5 at 512² runs at about 15-20 steps/s on a data-centre GPU, i.e. 4-5 M pixel-steps/s; SDXL's UNet is slower
# per pixel. Half of that keeps the estimate on the safe side.
PIXEL_STEPS_PER_SECOND = 2_000_000
# The most work one request may ask for on ZeroGPU (the cost cap there): what fits in the longest call.
MAX_PIXEL_STEPS = (MAX_SECONDS - OVERHEAD_SECONDS) * PIXEL_STEPS_PER_SECOND


def active(environ: dict[str, str] | None = None) -> bool:
    """True on a ZeroGPU Space: ``SPACES_ZERO_GPU`` is set (as ``spaces`` reads it) and ``spaces`` can be imported."""
    env = os.environ if environ is None else environ
    if env.get("SPACES_ZERO_GPU", "").strip().lower() not in ("1", "t", "true"):
        return False
    if sys.modules.get("spaces") is not None:  # already imported (or a stand-in, in the tests)
        return True
    try:
        return importlib.util.find_spec("spaces") is not None
    except (ImportError, ValueError):  # a broken or half-installed package counts as absent
        return False


def prepare() -> None:
    """At start, on ZeroGPU: import ``spaces`` before anything could touch CUDA (it patches torch and hooks Gradio's
    launch), and declare a GPU function, which ZeroGPU reports at startup (the real ones are made per call)."""
    if not active():
        return
    import spaces

    spaces.GPU(duration=MIN_SECONDS)(_startup_probe)


def _startup_probe() -> None:
    """Never called: the GPU function ZeroGPU finds at startup."""


def duration_for(steps: int, width: int, height: int, pictures: int) -> int:
    """Seconds to ask ZeroGPU for: the fixed cost plus the denoising work, within [MIN_SECONDS, MAX_SECONDS]."""
    work = max(0, steps) * max(0, width) * max(0, height) * max(1, pictures)
    seconds = OVERHEAD_SECONDS + -(-work // PIXEL_STEPS_PER_SECOND)  # ceiling division
    return int(min(MAX_SECONDS, max(MIN_SECONDS, seconds)))


def on_gpu(pipe: Any, task: Callable[[], T], seconds: int) -> T:
    """``task()``, on a ZeroGPU Space inside ``spaces.GPU(duration=seconds)`` with ``pipe`` moved to CUDA there.

    ``task`` takes no arguments: ZeroGPU pickles a GPU function's arguments to its worker process, and what a run
    needs (the pipeline, the step callback) cannot be pickled. The worker is forked for this call, so it sees the
    pipeline as it is now (after a model switch too); what ``task`` returns (PIL images, floats) is pickled back.
    """
    if not active():
        return task()
    import spaces  # only on a Space; importing it patches torch and gradio for ZeroGPU

    def run() -> T:
        # Inside the GPU call CUDA is real; the main process never touches it.
        if torch.cuda.is_available():
            pipe.to("cuda")
        return task()

    handler = spaces.GPU(duration=seconds)(run)
    log.info("ZeroGPU call: %d s requested", seconds)
    try:
        return handler()
    finally:
        _retire(run, handler)


def _retire(task: Callable[..., Any], handler: Callable[..., Any]) -> None:
    """Let the per-call worker go. ``spaces`` keeps every decorated function (and its idle worker process) for
    reuse; ours is used once, so keeping it would leave one idle process per run."""
    try:
        from spaces.zero import decorator  # spaces internals: best effort, never fatal
    except ImportError:
        return
    cache = getattr(decorator, "decorated_cache", None)
    if isinstance(cache, dict):
        cache.pop(task, None)
        cache.pop(handler, None)
    code = getattr(handler, "__code__", None)
    cells = getattr(handler, "__closure__", None) or ()
    names = code.co_freevars if code is not None else ()
    for name, cell in zip(names, cells, strict=False):
        if name != "workers":
            continue
        try:
            workers = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        for worker in list(getattr(workers, "values", lambda: [])()):
            process = getattr(worker, "process", None)
            if process is not None and process.is_alive():
                process.terminate()
        if hasattr(workers, "clear"):
            workers.clear()
