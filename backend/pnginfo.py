"""Read generation parameters back from an image file: ours, or the A1111 web UI's (PNG or JPEG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .infotext import REQUEST_KEYS, InfoText, parse_infotext
from .outputs import read_infotext

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


def read_parameters(path: str | Path) -> tuple[str, InfoText]:
    """The raw parameters text and its parsed form, or ``PngInfoError``."""
    try:
        with Image.open(path) as image:
            image.load()
            text = read_infotext(image) if image.format == "PNG" else _user_comment(image)
            kind = image.format or "image"
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise PngInfoError("This file is not a readable image. Drop a PNG made by SD Studio or A1111.") from None
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
