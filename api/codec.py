"""Base64 pictures in and out of the A1111 API: decoded only after their header passes the server's size limits,
encoded as PNGs that keep their parameters. No I/O beyond the bytes given."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.library.outputs import png_info
from backend.schema.errors import ValidationError


@dataclass
class Limits:
    """The server's limits on one uploaded picture (from ``Settings``)."""

    max_bytes: int
    max_pixels: int


def decode_image(data: Any, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """A base64 picture (optionally a data URL), checked by its header before its pixels are decoded."""
    if isinstance(data, dict):  # the extension also takes {"image": …, "mask": …}
        data = data.get("image")
    if not isinstance(data, str) or not data:
        raise ValidationError(field, f"{field} must be a base64-encoded picture")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) > max_bytes * 4 // 3 + 4:
        raise ValidationError(field, f"{field} is larger than this server's {max_bytes // 2**20} MB limit")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ValidationError(field, f"{field} is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > max_pixels:
                raise ValidationError(
                    field, f"{field} is {width}×{height}; this server takes at most {max_pixels:,} pixels"
                )
            image.load()
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError(field, f"{field} is not a readable picture (send a base64 PNG, JPEG or WebP)") from None
    return ImageOps.exif_transpose(image)


def encode_png(image: Image.Image) -> str:
    """A base64 PNG that keeps the picture's parameters, as A1111's API sends them."""
    buffer = io.BytesIO()
    text = image.info.get("parameters")
    image.save(buffer, format="PNG", pnginfo=png_info(text) if text else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
