"""Outputs are written atomically with their parameters."""

from __future__ import annotations

import logging
import os
import stat
import time

import pytest
from PIL import Image

from backend.library import outputs
from backend.library.outputs import OutputWriter, read_infotext, write_png_atomic


def test_png_carries_parameters(tmp_path):
    path = write_png_atomic(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", "cat\nSteps: 2, Seed: 1, CFG scale: 7")
    with Image.open(path) as img:
        assert read_infotext(img) == "cat\nSteps: 2, Seed: 1, CFG scale: 7"


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "b.png"
    target.write_bytes(b"earlier image")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(Image.new("RGB", (8, 8)), target, "x")
    assert target.read_bytes() == b"earlier image"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]  # no temp file left behind


def test_writer_numbers_files_per_day(tmp_path):
    writer = OutputWriter(tmp_path)
    first = writer.save(Image.new("RGB", (8, 8)), "a", 42)
    second = writer.save(Image.new("RGB", (8, 8)), "b", 7)
    assert first.name == "00001-42.png" and second.name == "00002-7.png"
    assert first.parent == second.parent and first.parent.parent == tmp_path


def test_files_get_the_usual_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_png_atomic(Image.new("RGB", (8, 8)), tmp_path / "m.png", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~outputs._UMASK
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others (the usual umask 022)


def test_a_killed_runs_temporary_files_are_removed_at_start_and_logged(tmp_path, caplog):
    """A server killed during a batch leaves ``.*.png.tmp`` files; the next start removes them (any older than a
    write could take) and says so in the log, so they never pile up."""
    day = tmp_path / "2026-01-01"
    day.mkdir()
    killed = [day / f".run{i}.png.tmp" for i in range(3)]
    for path in killed:
        path.write_bytes(b"half a png")
        old = time.time() - outputs.STALE_TEMP_AGE - 5
        os.utime(path, (old, old))
    writing = day / ".now.png.tmp"
    writing.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="backend.library.outputs"):
        OutputWriter(tmp_path)
    assert not any(p.exists() for p in killed) and writing.exists()
    assert f"Removed 3 temporary file(s) left by an interrupted run in {tmp_path}" in caplog.text
    assert outputs.STALE_TEMP_AGE <= 300, "a restart minutes after a crash cleans up too"
