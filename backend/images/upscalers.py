"""Image upscalers: Lanczos and any super-resolution model file spandrel can load (ESRGAN family and kin).

Model files are found in ``Settings.upscaler_dirs``. ``.safetensors`` always load; pickle files
(``.pth``/``.pt``/``.ckpt``) only when the owner opts in with ``SDSTUDIO_ALLOW_PICKLE=1``, and even then
through ``torch.load(weights_only=True)``. Models run in overlapping tiles so a large picture fits in
memory; the overlaps are cross-faded so seams do not show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.models.devices import plan_device
from backend.models.upscaler_files import (
    LANCZOS,
    LATENT_MODES,
    NEAREST,
    PICKLE_SUFFIXES,
    model_files,
    upscaler_names,
)
from backend.schema.errors import ValidationError
from backend.settings import Settings

PIL_FILTERS = {LANCZOS: Image.Resampling.LANCZOS, NEAREST: Image.Resampling.NEAREST}  # no model, no device
DEFAULT_TILE = 256  # input pixels per tile side
DEFAULT_OVERLAP = 16  # input pixels two neighbouring tiles share


def upscale_latents(latents: torch.Tensor, name: str, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (batch, channels, h, w) latent tensor to ``size`` = (height, width) with a latent mode."""
    mode, antialias = LATENT_MODES[name]
    # float32: not every mode is implemented for half precision on every device
    return torch.nn.functional.interpolate(latents.float(), size=size, mode=mode, antialias=antialias).to(latents.dtype)


@dataclass
class ModelUpscaler:
    name: str
    scale: int
    model: torch.nn.Module

    def upscale(self, image: Image.Image, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Image.Image:
        """Run the model once (the model's own scale); ``tile=0`` runs the whole picture at once."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
        param = next(self.model.parameters(), None)
        if param is not None:
            x = x.to(param.device, param.dtype)
        with torch.inference_mode():
            y = self._run(x) if tile <= 0 else self._tiled(x, tile, overlap)
        out = y.squeeze(0).permute(1, 2, 0).float().clamp(0, 1).cpu().numpy()
        return Image.fromarray((out * 255.0).round().astype(np.uint8))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _tiled(self, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        _, c, h, w = x.shape
        if h <= tile and w <= tile:
            return self._run(x)
        s = self.scale
        overlap = max(0, min(overlap, tile // 2))
        out = torch.zeros(1, c, h * s, w * s, dtype=x.dtype, device=x.device)
        weight = torch.zeros(1, 1, h * s, w * s, dtype=x.dtype, device=x.device)
        for top in _starts(h, tile, overlap):
            for left in _starts(w, tile, overlap):
                bottom, right = min(top + tile, h), min(left + tile, w)
                y = self._run(x[:, :, top:bottom, left:right])
                ramp = _ramp(bottom - top, right - left, overlap * s, s, top > 0, bottom < h, left > 0, right < w)
                ramp = ramp.to(x.device, x.dtype)
                out[:, :, top * s : bottom * s, left * s : right * s] += y * ramp
                weight[:, :, top * s : bottom * s, left * s : right * s] += ramp
        return out / weight.clamp_min(1e-8)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]  # the last tile ends at the edge


def _ramp(h: int, w: int, fade: int, s: int, top: bool, bottom: bool, left: bool, right: bool) -> torch.Tensor:
    """Tile blend weight: 1 inside, a linear fade over ``fade`` output pixels on sides that overlap a neighbour."""

    def axis(n: int, lo: bool, hi: bool) -> torch.Tensor:
        v = torch.ones(n * s)
        if fade > 0:
            r = (torch.arange(fade, dtype=torch.float32) + 1) / (fade + 1)
            if lo:
                v[:fade] = torch.minimum(v[:fade], r)
            if hi:
                v[-fade:] = torch.minimum(v[-fade:], r.flip(0))
        return v

    return (axis(h, top, bottom)[:, None] * axis(w, left, right)[None, :])[None, None]


_cache: dict[tuple[str, float, str], ModelUpscaler] = {}


def load_model(path: Path, *, allow_pickle: bool, field: str = "upscaler", device: str = "cpu") -> ModelUpscaler:
    """Load a model file with spandrel onto ``device``; a file it cannot read is a ValidationError naming ``field``."""
    import spandrel

    key = (str(path), path.stat().st_mtime, device)
    if key in _cache:
        return _cache[key]
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ValidationError(
            field, f"{path.name} is a pickle file; set SDSTUDIO_ALLOW_PICKLE=1 to load it, or use a .safetensors file"
        )
    try:
        if suffix in PICKLE_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "params_ema" in state:
                state = state["params_ema"]
            elif isinstance(state, dict) and "params" in state:
                state = state["params"]
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        else:
            descriptor = spandrel.ModelLoader().load_from_file(path)
    except Exception as exc:  # corrupt file, unknown architecture: the user can only pick another file
        raise ValidationError(field, f"{path.name} is not an upscaler model spandrel can load ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
        raise ValidationError(field, f"{path.name} is not a 3-channel image-to-image model")
    model = descriptor.model.eval().to(device)  # float32: not every architecture runs in half precision
    upscaler = ModelUpscaler(path.stem, int(descriptor.scale), model)
    _cache.clear()  # keep one model resident: they can be large
    _cache[key] = upscaler
    return upscaler


def upscale(
    image: Image.Image,
    name: str,
    scale: float,
    settings: Settings,
    *,
    field: str = "upscaler",
    tile: int = DEFAULT_TILE,
    target: tuple[int, int] | None = None,
) -> Image.Image:
    """Upscale ``image`` by ``scale`` (or to ``target`` = (width, height)) with the upscaler ``name``.

    A model runs as many times as needed to reach the size (×4 model, ×8 asked → twice), then Lanczos
    brings the result to the exact size.
    """
    width, height = target or (round(image.width * scale), round(image.height * scale))
    if name in PIL_FILTERS:
        return image.convert("RGB").resize((width, height), PIL_FILTERS[name])
    files = model_files(settings)
    if name not in files:
        raise ValidationError(field, f"unknown upscaler {name!r}; choose one of {', '.join(upscaler_names(settings))}")
    device = plan_device(settings).device
    model = load_model(files[name], allow_pickle=settings.allow_pickle, field=field, device=device)
    out = image.convert("RGB")
    while out.width < width or out.height < height:
        out = model.upscale(out, tile=tile)
        if model.scale <= 1:
            break
    if out.size != (width, height):
        out = out.resize((width, height), Image.Resampling.LANCZOS)
    return out


def extras_upscale(image: Any, name: str, scale: Any, settings: Settings) -> Image.Image:
    """The Extras tab and ``/upscale``: one picture on its own, checked first (a field per problem)."""
    if image is None or not hasattr(image, "size"):
        raise ValidationError("image", "add a picture to upscale")
    try:
        factor = float(scale)
    except (TypeError, ValueError):
        raise ValidationError("scale", f"scale must be a number, got {scale!r}") from None
    if not 1.0 <= factor <= 8.0:
        raise ValidationError("scale", f"scale must be between 1 and 8, got {factor:g}")
    width, height = round(image.width * factor), round(image.height * factor)
    if width * height > settings.max_image_pixels:
        most = (settings.max_image_pixels / (image.width * image.height)) ** 0.5
        raise ValidationError(
            "scale",
            f"{width}×{height} is more than the {settings.max_image_pixels} pixels allowed: "
            f"use scale {int(most * 100) / 100:g} or less",
        )
    if name not in upscaler_names(settings):
        raise ValidationError(
            "upscaler", f"unknown upscaler {name!r}; choose one of {', '.join(upscaler_names(settings))}"
        )
    return upscale(image, name, factor, settings, field="upscaler")
