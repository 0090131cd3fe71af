"""What the History index reads from the output folder: its folders, and a picture's row from its PNG chunk."""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from PIL import Image

from backend.library.infotext import parse_infotext
from backend.library.outputs import PARAMETERS_KEY

PICTURES = (".png",)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def describe(path: Path, infotext: str | None, mtime_ns: int, root: Path) -> tuple:
    """A picture's index row (without id and owner): relative path, folder, mtime, day, model, prompt, infotext."""
    rel = path.relative_to(root).as_posix()
    folder = path.parent.relative_to(root).as_posix()
    day = path.parent.name if _DAY.match(path.parent.name) else _dt.date.fromtimestamp(mtime_ns / 1e9).isoformat()
    text = infotext or ""
    parsed = parse_infotext(text) if text else None
    model = parsed.params.get("Model", "") if parsed else ""
    return rel, folder, mtime_ns, day, model, parsed.prompt if parsed else "", text


def read_parameters(path: Path) -> str | None:
    """The PNG's ``parameters`` text, read from its header chunks (the pixels are never decoded)."""
    try:
        with Image.open(path) as image:
            return image.info.get(PARAMETERS_KEY)
    except (OSError, ValueError, SyntaxError):
        return None  # not a readable picture: indexed without parameters, so it is not read again


def folders(root: Path) -> list[Path]:
    """``root`` and every folder under it, except hidden ones (the trash, the index)."""
    found, stack = [], [Path(root)]
    while stack:
        folder = stack.pop()
        found.append(folder)
        try:
            with os.scandir(folder) as entries:
                stack += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name[0] != "."]
        except OSError:
            continue
    return found
