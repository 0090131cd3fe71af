"""Running on a Hugging Face Space: the defaults a Space gets, where it listens, the "Duplicate" link.

Spaces set ``SPACE_ID`` (``owner/name``) in the app's environment. Every value here is only a default: an
``SDSTUDIO_*`` variable the Space's owner sets, or a command-line flag, still wins.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from backend.models import openvino_unet, zerogpu
from backend.models.loaders import is_cached
from backend.settings import ENV_PREFIX

# The free CPU Space (2 vCPUs) draws a 512² SD 1.5 picture in minutes on torch; the shipped demo model draws its 64²
# pictures in seconds and needs no download. Visitors can still pick any model in the list.
CPU_SPACE_MODEL = "Demo shapes (offline)"
# With OpenVINO, SD-Turbo (512², 1 step, no CFG) is a real model at seconds per picture: the Space's default where
# its weights are already in the hub cache (e.g. the Space's preload_from_hub), never downloaded at start.
TURBO_MODEL, TURBO_SOURCE = "SD-Turbo", "stabilityai/sd-turbo"
# Seconds per SD-Turbo picture expected on 2 cores with OpenVINO f32 (bf16 where the CPU has it), computed from
# `python -m bench openvino --size 512 --steps 1 --guidance 0` on SD 1.5's architecture (the same VAE, a UNet of the
# same size): 11.9 s and 6.0 s there (docs/performance.md, "OpenVINO (CPU)").
TURBO_SECONDS = {"f32": 12.0, "bf16": 6.0}
SPACE_PORT = 7860


def space_id(environ: dict[str, str] | None = None) -> str:
    """``owner/name`` of the Space this runs on, or "" when it is not on a Space."""
    env = os.environ if environ is None else environ
    return env.get("SPACE_ID", "").strip()


def duplicate_url(space: str) -> str:
    """The page that makes a private copy of ``space`` (its own hardware and queue)."""
    return f"https://huggingface.co/spaces/{space}?duplicate=true"


def turbo_ready() -> bool:
    """SD-Turbo can run on OpenVINO here without a download: the package is installed and the weights are cached."""
    return openvino_unet.available() and is_cached(TURBO_SOURCE)


def profile(
    environ: dict[str, str] | None = None, cuda: bool | None = None, turbo: bool | None = None
) -> tuple[dict[str, Any], str]:
    """Settings defaults for this machine when it is a Space, and the line the page shows about them.

    On any Space nothing is saved to the server's disk (visitors download what they keep). On a Space without a GPU
    (no CUDA, not ZeroGPU) the default model is SD-Turbo on OpenVINO where ``turbo_ready``, else the demo model.
    ``cuda`` and ``turbo`` override the probes (tests). Off a Space: no defaults, no line.
    """
    env = os.environ if environ is None else environ
    if not space_id(env):
        return {}, ""
    defaults: dict[str, Any] = {"save_outputs": False}
    # On ZeroGPU the GPU arrives per call and CUDA must not be probed in this process.
    gpu = zerogpu.active(env) or (torch.cuda.is_available() if cuda is None else cuda)
    if gpu:
        return _unless_set(defaults, env), ""
    # Precision is left to --dtype auto, as everywhere (bf16 where the CPU computes it natively; the page says).
    real = turbo_ready() if turbo is None else turbo
    chosen = {"default_model": TURBO_MODEL, "backend": "openvino"} if real else {"default_model": CPU_SPACE_MODEL}
    defaults.update(chosen)
    defaults = _unless_set(defaults, env)
    if defaults.get("default_model") != TURBO_MODEL:
        defaults.pop("backend", None)  # the owner picked another model: its backend stays --backend's default
    parts = ["This Space runs on a CPU, so it starts with a fast profile:"]
    if defaults.get("default_model") == TURBO_MODEL:
        seconds = " or ".join(f"{value:.0f} s ({name})" for name, value in TURBO_SECONDS.items())
        parts.append(
            f"{TURBO_MODEL} at 512×512, 1 step, on OpenVINO (about {seconds} per picture on 2 cores, computed "
            "from the benchmark; the first start converts the model, a few minutes)"
        )
    elif "default_model" in defaults:
        parts.append(f"the {defaults['default_model']} model at its small size (pictures in seconds)")
    parts[-1] += "."
    if defaults.get("default_model") != TURBO_MODEL:
        parts.append("Other models work too but take minutes per picture here (SD-Turbo at 1 step is the quickest).")
    if defaults.get("save_outputs") is False:
        parts.append("Nothing is saved on the server: download the pictures you want to keep.")
    return defaults, " ".join(parts)


def _unless_set(defaults: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Drop the defaults the Space's owner set through ``SDSTUDIO_*`` variables."""
    return {name: value for name, value in defaults.items() if ENV_PREFIX + name.upper() not in env}


def serve_address(
    host: str | None, port: int | None, listen: bool, environ: dict[str, str] | None = None
) -> tuple[str, int]:
    """Where the server listens: an explicit host/port (flag or ``SDSTUDIO_HOST``/``PORT``) first, then Gradio's
    own ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, then 0.0.0.0:7860 on a Space (its proxy connects from
    outside the container) or with ``--listen``, else 127.0.0.1:7860."""
    env = os.environ if environ is None else environ
    fallback = "0.0.0.0" if listen or space_id(env) else "127.0.0.1"
    name = "0.0.0.0" if listen else host or env.get("GRADIO_SERVER_NAME") or fallback
    if port is None:
        port = int(env.get("GRADIO_SERVER_PORT") or SPACE_PORT)
    return name, port
