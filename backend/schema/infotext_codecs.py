"""How request fields that are not one plain value are written into the infotext and read back: the ``written`` and
``read`` functions that ``backend.schema.requests`` hands ``spec(...)`` (a size as ``WxH``, keys written only when
the hires fix or "Only masked" ran, and ``NOT_READ`` for keys no field takes back)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def size_text(request: Any) -> str:
    return f"{request.width}x{request.height}"


def read_size(text: str) -> dict[str, Any]:
    width, _, height = text.partition("x")
    return {"width": int(width), "height": int(height)} if width.isdigit() and height.isdigit() else {}


def NOT_READ(text: str) -> dict[str, Any]:  # noqa: N802 - a marker the infotext reader checks for
    """A key written for people and A1111, which no request field takes back."""
    return {}


def seed_resize_text(request: Any) -> str | None:
    w, h = request.seed_resize_from_w, request.seed_resize_from_h
    return f"{w}x{h}" if w > 0 and h > 0 else None


def read_seed_resize(text: str) -> dict[str, Any]:
    size = read_size(text)
    return {"seed_resize_from_w": size["width"], "seed_resize_from_h": size["height"]} if size else {}


def hires_only(value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A hires key's value, written only when the hires fix ran."""
    return lambda r: value(r) if r.enable_hr else None


def read_hires_resize(text: str) -> dict[str, Any]:
    """A1111's "Hires resize: 1024x0": the hires size instead of a scale."""
    x, _, y = text.partition("x")
    if not (x.isdigit() and y.isdigit() and len(x) <= 6 and len(y) <= 6):
        return {}
    return {"enable_hr": True, "hr_resize_x": int(x), "hr_resize_y": int(y)}


def only_masked(value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An inpaint key's value, written only when "Only masked" ran."""
    return lambda r: value(r) if r.inpaint_area == "Only masked" else None
