"""Read Gradio's image editor value ({background, layers, composite}) into an image and a mask."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageChops

from backend.schema.geometry import binary_mask

EDITOR_CANVAS = (800, 800)  # gr.ImageEditor's default canvas_size


def is_blank_canvas(image: Image.Image) -> bool:
    """The editor's empty canvas (strokes painted before any picture was uploaded), not a picture."""
    if image.size != EDITOR_CANVAS:
        return False
    low, high = zip(*image.convert("RGB").getextrema(), strict=True)
    return low == high


def split_editor_value(value: Any, uploaded_mask: Image.Image | None = None) -> tuple[Image.Image | None, Any]:
    """(image, mask) from the editor; an uploaded mask wins over painted strokes.

    The painted mask is the union of every layer's strokes, aligned to the background's size (the editor
    may hand layers back at its canvas size). No strokes → ``None``, which the backend reports as
    "paint the area to repaint".
    """
    if value is None:
        return None, uploaded_mask
    if isinstance(value, Image.Image):
        return value.convert("RGB"), uploaded_mask
    background = value.get("background") or value.get("composite")
    if background is None or is_blank_canvas(background):
        return None, uploaded_mask
    image = background.convert("RGB")
    if uploaded_mask is not None:
        return image, uploaded_mask
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        painted = binary_mask(layer if layer.mode == "RGBA" else layer.convert("RGBA"), image.size)
        mask = painted if mask is None else ImageChops.lighter(mask, painted)
    if mask is None or mask.getextrema()[1] == 0:
        return image, None
    return image, mask
