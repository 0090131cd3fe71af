"""Upscaler names: the picture filters, A1111's latent modes, and the model files in the upscaler folders.

A folder scan with no model code, so the validator can name the choices without loading torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from backend.settings import PROJECT_ROOT, Settings

LANCZOS = "Lanczos"
NEAREST = "Nearest"
PICTURE_FILTERS = (LANCZOS, NEAREST)  # no model, no device (backend.images.upscalers)
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
# Hires fix only: A1111's latent upscalers (name → torch interpolate mode, antialias). The first pass's latents are
# resized and denoised at the target size without a VAE round trip; they need denoising around 0.5 or more.
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscaler_dirs(settings: Settings) -> list[Path]:
    """``SDSTUDIO_UPSCALER_DIRS`` (os.pathsep-separated); relative folders are the project's."""
    paths = [Path(p.strip()).expanduser() for p in settings.upscaler_dirs.split(os.pathsep) if p.strip()]
    return [p if p.is_absolute() else PROJECT_ROOT / p for p in paths]


def model_files(settings: Settings) -> dict[str, Path]:
    """Upscaler name (the file's stem) → file, first folder wins on a clash."""
    suffixes = SAFE_SUFFIXES + (PICKLE_SUFFIXES if settings.allow_pickle else ())
    found: dict[str, Path] = {}
    for folder in upscaler_dirs(settings):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in suffixes:
                found.setdefault(path.stem, path)
    return found


def upscaler_names(settings: Settings) -> list[str]:
    return [*PICTURE_FILTERS, *model_files(settings)]


def hires_upscaler_names(settings: Settings) -> list[str]:
    """The hires fix's choices, in A1111's order: the latent modes, then the picture upscalers."""
    return [*LATENT_MODES, *upscaler_names(settings)]
