"""Outpainting: grow the canvas left/right/up/down, fill the new area, and mask it for the inpaint pipeline.

The pipeline works on sizes that are multiples of 8, so the canvas is padded up to one (on the sides that grow,
else right/bottom) and the result is cropped back: the picture grows by exactly the pixels asked. The blend mask is
zero over the old picture (unless the user painted there too), so the old pixels come back exactly, and one over
the whole new area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from backend.schema.choices import OUTPAINT_FILLS
from backend.schema.geometry import Margins, canvas_size, round_up

FILLS = OUTPAINT_FILLS
EDGE_BLUR = 12  # radius of the blurred-edge fill: smooth enough that no streaks of edge pixels remain


def _padded(margins: Margins, size: tuple[int, int]) -> Margins:
    """The margins with the padding to multiples of 8 added, on a side that grows (right/bottom if none does)."""
    width, height = canvas_size(size, margins)
    extra_w, extra_h = round_up(width) - width, round_up(height) - height
    left = margins.left + (extra_w if margins.left and not margins.right else 0)
    up = margins.up + (extra_h if margins.up and not margins.down else 0)
    return Margins(left, width + extra_w - size[0] - left, up, height + extra_h - size[1] - up)


@dataclass
class Canvas:
    image: Image.Image  # the grown, filled picture at the run size
    mask: Image.Image  # white = generate: the new area, plus what the user painted on the old picture
    box: tuple[int, int, int, int]  # the picture the user asked for, inside ``image`` (left, top, right, bottom)
    keep: Image.Image  # white where the old picture is kept: the blend mask must be black there

    @property
    def size(self) -> tuple[int, int]:
        """The grown picture's (width, height)."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def extend(image: Image.Image, mask: Image.Image | None, margins: Margins, fill: str, seed: int) -> Canvas:
    """The grown canvas. ``mask`` (white = repaint, the picture's size) may be ``None``: only the new area."""
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of: {', '.join(FILLS)}")
    padded = _padded(margins, image.size)
    rgb = np.asarray(image.convert("RGB"))
    pad = ((padded.up, padded.down), (padded.left, padded.right), (0, 0))
    # Edge pixels stretched outwards, then blurred: colours continue past the border without hard streaks.
    grown = Image.fromarray(np.pad(rgb, pad, mode="edge"))
    old = Image.new("L", image.size, 255)
    keep = Image.new("L", grown.size, 0)
    keep.paste(old, (padded.left, padded.up))
    if fill == "Blurred edge":
        blurred = grown.filter(ImageFilter.GaussianBlur(EDGE_BLUR))
        grown = Image.composite(grown, blurred, keep)
    else:
        rng = np.random.default_rng(seed)
        noise = Image.fromarray(rng.integers(0, 256, (grown.height, grown.width, 3), dtype=np.uint8))
        grown = Image.composite(grown, noise, keep)
    new_area = ImageChops.invert(keep)
    if mask is not None:
        painted = Image.new("L", grown.size, 0)
        painted.paste(mask.convert("L"), (padded.left, padded.up))
        new_area = ImageChops.lighter(new_area, painted)
    width, height = canvas_size(image.size, margins)
    left, top = padded.left - margins.left, padded.up - margins.up
    box = (left, top, left + width, top + height)
    return Canvas(grown, new_area, box, keep)


def blend_mask(canvas: Canvas, blur: int) -> Image.Image:
    """The mask the result is blended with: the whole new area, plus the user's strokes on the old picture blurred
    by ``blur`` into it. Nothing else of the old picture: the generated seam is not faded into fill pixels."""
    painted_old = ImageChops.multiply(canvas.mask, canvas.keep)
    soft_old = painted_old.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else painted_old
    return ImageChops.lighter(ImageChops.invert(canvas.keep), ImageChops.multiply(soft_old, canvas.keep))
