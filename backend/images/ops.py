"""Image preparation shared by the image-input tasks: resize modes, masks, and the final blend-back."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from backend.schema.choices import RESIZE_MODES


def check_picture_file(path: str | Path, max_pixels: int) -> None:
    """Refuse a file that is not a picture, or declares more than ``max_pixels``, from its header alone.

    Raises ``ValueError`` with what to do. Nothing is decoded: a 30000×30000 PNG costs a few bytes to send and
    gigabytes to decode.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:
        width = height = 0  # PIL's own guard: far over any limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValueError("this file is not a picture (upload a PNG, JPEG or WebP)") from None
    if width * height > max_pixels or not width:
        declared = f"{width}×{height} ({width * height:,} pixels)" if width else "far larger than that"
        raise ValueError(
            f"the picture is {declared}; this server takes at most {max_pixels:,} pixels "
            f"(e.g. {int(max_pixels**0.5)}×{int(max_pixels**0.5)}): upload a smaller picture"
        )


def resize(image: Image.Image, width: int, height: int, mode: str = "Just resize", fill: str = "blur") -> Image.Image:
    """A1111's resize modes: stretch, cover-and-crop, or fit-and-fill. ``fill``: the borders of fit-and-fill come
    from a blurred stretch ("blur", for pictures) or are black ("black", for control maps: no control there)."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if image.size == (width, height):
        return image
    if mode == "Just resize":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "Crop and resize":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == "Resize and fill":
        if fill == "black":
            canvas = Image.new(image.mode, (width, height))
        else:
            canvas = image.resize((width, height), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(16))
        fitted = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
        return canvas
    raise ValueError(f"unknown resize mode {mode!r}; choose one of: {', '.join(RESIZE_MODES)}")


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def blend_back(original: Image.Image, generated: Image.Image, soft_mask: Image.Image) -> Image.Image:
    """Keep the original's pixels wherever the (blurred) mask is black: only the mask region changes."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), soft_mask)


MASK_TINT = (255, 40, 150)  # a magenta no palette colour of a typical picture is mistaken for


def mask_overlay(picture: Image.Image, mask: Image.Image, opacity: float = 0.55) -> Image.Image:
    """The mask shown on the picture: the masked area tinted, every other pixel exactly the picture's.

    A plain white-on-black mask beside a white picture says nothing; the tint says where on *this* picture.
    """
    base = picture.convert("RGB")
    alpha = mask.convert("L").resize(base.size).point(lambda v: round(v * opacity))
    return Image.composite(Image.new("RGB", base.size, MASK_TINT), base, alpha)
