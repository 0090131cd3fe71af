"""Read generation parameters back from an image file: ours, or the A1111 web UI's (PNG or JPEG)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from backend.library.infotext import REQUEST_KEYS, InfoText, parse_infotext
from backend.library.outputs import PARAMETERS_KEY, read_infotext

EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286  # where A1111 writes parameters into JPEG/WebP files


class PngInfoError(ValueError):
    """The file has no readable parameters; the message says why in words a user can act on."""


def _user_comment(image: Image.Image) -> str | None:
    raw = image.getexif().get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if isinstance(raw, bytes):
        prefix, body = raw[:8], raw[8:]
        if prefix.startswith(b"UNICODE"):
            # EXIF says UCS-2 without a byte order; A1111 (via piexif) writes big-endian.
            for encoding in ("utf-16-be", "utf-16-le"):
                try:
                    return body.decode(encoding).rstrip("\x00")
                except UnicodeDecodeError:
                    continue
        return body.decode("utf-8", errors="replace").rstrip("\x00")
    return raw or None


MAX_PARAMETERS_CHARS = 65536  # A1111's longest real texts are a few thousand characters


def read_parameters(path: str | Path, max_pixels: int = 4096 * 4096) -> tuple[str, InfoText]:
    """The raw parameters text and its parsed form, or ``PngInfoError``.

    Pixels are decoded only for a PNG whose parameters follow the picture data, and only up to ``max_pixels``;
    compressed text chunks are bounded by Pillow (``PngImagePlugin.MAX_TEXT_CHUNK``).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind = image.format or "image"
                if kind == "PNG":
                    text = image.info.get(PARAMETERS_KEY)
                    width, height = image.size
                    if text is None and width * height <= max_pixels:
                        image.load()  # text chunks after the picture data are read with it
                        text = read_infotext(image)
                else:
                    text = _user_comment(image)
    except Image.DecompressionBombError:
        raise PngInfoError("This picture declares an absurd size: SD Studio and A1111 make no such pictures.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # ValueError: a text chunk too large
        raise PngInfoError("This file is not a readable image. Drop a PNG made by SD Studio or A1111.") from None
    if text and len(text) > MAX_PARAMETERS_CHARS:
        raise PngInfoError(
            f"Its parameters text is {len(text):,} characters long; PNG info reads at most {MAX_PARAMETERS_CHARS:,}."
        )
    if not text:
        raise PngInfoError(
            f"This {kind} has no generation parameters: it was not made by SD Studio or the A1111 web UI, "
            "or they were stripped (many sites and chat apps remove them)."
        )
    return text, parse_infotext(text)


def parameters_dict(info: InfoText) -> dict[str, Any]:
    """Parsed fields for display and the API: the request fields first, then every other key as written."""
    fields = info.request_fields()
    wanted = ("prompt", "negative_prompt", "steps", "sampler", "schedule", "guidance_scale", "seed", "width", "height")
    result: dict[str, Any] = {name: fields.get(name) for name in wanted}
    result.update({k: v for k, v in fields.items() if k not in result})
    result["other"] = {k: v for k, v in info.params.items() if k not in REQUEST_KEYS}
    return result
