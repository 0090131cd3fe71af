"""Opt-in step caching (DeepCache): the UNet's deep blocks run on every Nth step only; the steps between reuse
their output and run just the outermost layers.

Adjacent denoising steps change the UNet's high-level features very little, so reusing them saves most of a
step's UNet work at a small quality cost (Ma et al., "DeepCache: Accelerating Diffusion Models for Free",
CVPR 2024). The ``DeepCache`` package's helper does the caching by wrapping the UNet's block ``forward``
methods for the length of one pipeline call; this module only turns it on and off around the call and keeps it
correct when "skip CFG after" halves the batch mid-run (the cached outputs have the old batch size).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

OFF = 1  # the default: the whole UNet on every step


def active(interval: int) -> bool:
    return interval > OFF


@contextmanager
def cached_steps(pipe: Any, interval: int) -> Iterator[Any]:
    """For the ``with`` body, ``pipe``'s UNet runs fully on every ``interval``-th step (from the first) and
    reuses its deep features between; yields the helper (``None`` when off)."""
    if not active(interval):
        yield None
        return
    from DeepCache import DeepCacheSDHelper

    modules = list(pipe.unet.modules())
    own_forward = {id(m) for m in modules if "forward" in vars(m)}  # e.g. accelerate's offload hooks
    helper = DeepCacheSDHelper(pipe=pipe)
    # Branch 0: only the first down layer and the last up layer run on the cached steps (the paper's SD 1.5 setup).
    helper.set_params(cache_interval=interval, cache_branch_id=0)
    helper.enable()
    try:
        yield helper
    finally:
        helper.disable()
        for module in modules:  # disable() leaves bound methods as instance attributes; drop those it added
            if id(module) not in own_forward:
                vars(module).pop("forward", None)


def refresh(helper: Any) -> None:
    """Make the next step a full one and forget the cache (after the batch changed size)."""
    if helper is not None:
        helper.cached_output.clear()
        helper.start_timestep = None
