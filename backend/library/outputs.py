"""PNG outputs with their parameters, written atomically.

Each image goes to ``<output_dir>/<YYYY-MM-DD>/<NNNNN>-<seed>.png`` with the infotext in the
``parameters`` tEXt chunk, as the A1111 web UI writes it. The file is written under a temporary name in
the same folder and renamed into place, so a crash never leaves a half-written PNG behind.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin

log = logging.getLogger(__name__)
PARAMETERS_KEY = "parameters"
_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)
_NUMBERED = re.compile(r"^(\d{5})-")


def png_info(infotext: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, infotext)
    return info


def write_atomic(path: Path, write: Callable[[BinaryIO], None], suffix: str = ".tmp") -> Path:
    """Write ``path`` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=suffix, dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (shared output folders).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_png_atomic(image: Image.Image, path: Path, infotext: str) -> Path:
    return write_atomic(path, lambda f: image.save(f, format="PNG", pnginfo=png_info(infotext)), ".png.tmp")


def read_infotext(image: Image.Image) -> str | None:
    """The ``parameters`` text of a PNG (None when it has none)."""
    text = image.info.get(PARAMETERS_KEY)
    if text is None and hasattr(image, "text"):
        text = image.text.get(PARAMETERS_KEY)  # type: ignore[union-attr]
    return text


# Seconds: a temporary file this old belongs to no write in progress (a PNG is written in well under a second; only
# another server sharing the folder could be writing one as this one starts).
STALE_TEMP_AGE = 120.0


def remove_stale_temp_files(root: Path, max_age: float = STALE_TEMP_AGE) -> list[Path]:
    """Delete the ``.<name>.png.tmp`` files a killed process left in ``root``'s day folders (ours only, by name
    pattern and age); return what was removed."""
    removed = []
    now = time.time()
    for path in Path(root).glob("*/.*.png.tmp"):
        try:
            if now - path.stat().st_mtime > max_age:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # another process's, or gone already
    return removed


class OutputWriter:
    """Numbers files per day folder; one lock so concurrent requests never take the same number."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self.on_saved: list[Callable[[Path, str], None]] = []  # called with each saved file (the history index)
        removed = remove_stale_temp_files(self.root)
        if removed:
            log.info("Removed %d temporary file(s) left by an interrupted run in %s", len(removed), self.root)

    def save(self, image: Image.Image, infotext: str, seed: int) -> Path:
        folder = self.root / _dt.date.today().isoformat()
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
            path = write_png_atomic(image, folder / f"{max(numbers, default=0) + 1:05d}-{seed}.png", infotext)
        for hook in self.on_saved:
            hook(path, infotext)
        return path
