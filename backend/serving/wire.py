"""Requests, results and step events as plain data for another process: pictures travel as PNG bytes.

``pack`` walks dataclasses, lists, tuples and dicts and replaces every PIL image with ``PngImage`` (keeping its text
chunks, where the infotext lives); ``unpack`` undoes it. Everything else is left to pickle, which the dataclasses
of ``backend.schema.requests`` and ``backend.grid.plan`` support as they are.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin


@dataclass(frozen=True)
class PngImage:
    data: bytes


def image_to_png(image: Image.Image) -> PngImage:
    info = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(value, str):
            info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return PngImage(buffer.getvalue())


def png_to_image(png: PngImage) -> Image.Image:
    image = Image.open(io.BytesIO(png.data))
    image.load()
    return image


def pack(value: Any) -> Any:
    return _walk(value, Image.Image, image_to_png)


def unpack(value: Any) -> Any:
    return _walk(value, PngImage, png_to_image)


def _walk(value: Any, kind: type, convert: Any) -> Any:
    if isinstance(value, kind):
        return convert(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # copy + setattr rather than the constructor: works for frozen classes and fields with init=False.
        clone = copy.copy(value)
        for f in dataclasses.fields(value):
            object.__setattr__(clone, f.name, _walk(getattr(value, f.name), kind, convert))
        return clone
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(item, kind, convert) for item in value)
    if isinstance(value, dict):
        return {key: _walk(item, kind, convert) for key, item in value.items()}
    return value
