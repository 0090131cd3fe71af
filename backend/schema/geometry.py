"""Sizes and masks as the validator settles them: a picture's run size, outpaint margins, the binary mask.

Here, not in ``backend.images``, because validation needs them and the schema imports nothing of the image tools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from backend.schema.choices import SIZE_MULTIPLE


def size_from_image(image: Image.Image, max_width: int, max_height: int) -> tuple[int, int]:
    """The image's size rounded to the nearest multiple of 8 and scaled down to fit the limits."""
    width, height = image.size
    scale = min(1.0, max_width / width, max_height / height)
    return tuple(max(SIZE_MULTIPLE, round(v * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for v in (width, height))


def binary_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """White (255) = repaint. Any non-black pixel counts; alpha is honoured; aligned to ``size``."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        luminance = mask.convert("L")
        mask = Image.fromarray(((_array(alpha) > 0) & (_array(luminance) > 0)).astype("uint8") * 255)
    else:
        mask = mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@dataclass(frozen=True)
class Margins:
    """Outpainting: pixels to grow the picture by on each side."""

    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0

    def any(self) -> bool:
        return any((self.left, self.right, self.up, self.down))


def round_up(value: int) -> int:
    return -(-value // SIZE_MULTIPLE) * SIZE_MULTIPLE


def canvas_size(size: tuple[int, int], margins: Margins) -> tuple[int, int]:
    """The grown picture's (width, height)."""
    return size[0] + margins.left + margins.right, size[1] + margins.up + margins.down


def run_size(size: tuple[int, int], margins: Margins) -> tuple[int, int]:
    """The size the pipeline runs at: the grown picture padded up to multiples of 8."""
    width, height = canvas_size(size, margins)
    return round_up(width), round_up(height)
