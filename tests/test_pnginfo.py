"""PNG info: read ours and A1111's parameters back; clear messages for files without them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.library.infotext import format_infotext
from backend.library.pnginfo import EXIF_IFD, EXIF_USER_COMMENT, PngInfoError, parameters_dict, read_parameters
from backend.schema.requests import Txt2ImgRequest

from .conftest import pixels

A1111 = (
    "portrait of a knight\nNegative prompt: lowres\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, "
    "Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2"
)


def test_regenerate_from_our_png_is_identical(shared_engine, tiny_request):
    first = shared_engine.run(tiny_request.replace(seed=-1, sampler="DPM++ 2M SDE", schedule="Karras"))
    text, info = read_parameters(first.paths[0])
    assert text == first.infotext
    again = shared_engine.run(info.to_request(Txt2ImgRequest))
    assert again.request.seed == first.seeds[0]
    assert np.array_equal(pixels(again.images[0]), pixels(first.images[0]))


def test_a1111_png(tmp_path):
    from backend.library.outputs import write_png_atomic

    path = write_png_atomic(Image.new("RGB", (8, 8)), tmp_path / "a.png", A1111)
    _, info = read_parameters(path)
    fields = parameters_dict(info)
    assert fields["sampler"] == "DPM++ 2M" and fields["schedule"] == "Karras"
    assert (fields["width"], fields["height"], fields["seed"]) == (512, 768, 3141592653)
    assert fields["clip_skip"] == 2  # a field SD Studio has: sent to the tabs
    assert fields["other"] == {"Model hash": "6ce0161689"}
    for key in (
        "prompt",
        "negative_prompt",
        "steps",
        "sampler",
        "schedule",
        "guidance_scale",
        "seed",
        "width",
        "height",
    ):
        assert key in fields


def test_a1111_jpeg_user_comment(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\x00" + A1111.encode("utf-16-be")
    path = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(path, exif=exif)
    text, info = read_parameters(path)
    assert text == A1111 and info.negative_prompt == "lowres"


def test_files_without_parameters(tmp_path):
    png, jpg, bad = tmp_path / "plain.png", tmp_path / "plain.jpg", tmp_path / "bad.png"
    Image.new("RGB", (8, 8)).save(png)
    Image.new("RGB", (8, 8)).save(jpg)
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(PngInfoError, match="This PNG has no generation parameters"):
        read_parameters(png)
    with pytest.raises(PngInfoError, match="This JPEG has no generation parameters"):
        read_parameters(jpg)
    with pytest.raises(PngInfoError, match="not a readable image"):
        read_parameters(bad)


def test_unused_infotext_helper_matches_format(tiny_request):
    # The parsed dict round-trips the request fields we write.
    from backend.library.infotext import parse_infotext

    fields = parameters_dict(parse_infotext(format_infotext(tiny_request, 5)))
    assert fields["seed"] == 5 and fields["guidance_scale"] == tiny_request.guidance_scale
