"""Running on a Hugging Face Space: the defaults a Space gets, where it listens, the "Duplicate" link.

Spaces set ``SPACE_ID`` (``owner/name``) in the app's environment. Every value here is only a default: an
``SDSTUDIO_*`` variable the Space's owner sets, or a command-line flag, still wins.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from backend.models import zerogpu
from backend.settings import ENV_PREFIX

# The free CPU Space (2 vCPUs) draws a 512² SD 1.5 picture in minutes; the shipped demo model draws its 64² pictures
# in seconds and needs no download. Visitors can still pick any model in the list.
CPU_SPACE_MODEL = "Demo shapes (offline)"
SPACE_PORT = 7860


def space_id(environ: dict[str, str] | None = None) -> str:
    """``owner/name`` of the Space this runs on, or "" when it is not on a Space."""
    env = os.environ if environ is None else environ
    return env.get("SPACE_ID", "").strip()


def duplicate_url(space: str) -> str:
    """The page that makes a private copy of ``space`` (its own hardware and queue)."""
    return f"https://huggingface.co/spaces/{space}?duplicate=true"


def profile(environ: dict[str, str] | None = None, cuda: bool | None = None) -> tuple[dict[str, Any], str]:
    """Settings defaults for this machine when it is a Space, and the line the page shows about them.

    On any Space nothing is saved to the server's disk (visitors download what they keep). On a Space without a GPU
    (no CUDA, not ZeroGPU) the default model is the fast demo model.
    ``cuda`` overrides the CUDA probe (tests). Off a Space: no defaults, no line.
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
    defaults["default_model"] = CPU_SPACE_MODEL
    defaults = _unless_set(defaults, env)
    parts = ["This Space runs on a CPU, so it starts with a fast profile:"]
    if "default_model" in defaults:
        parts.append(f"the {defaults['default_model']} model at its small size (pictures in seconds)")
    parts[-1] += "."
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
