"""A1111 infotext: ours round-trips; A1111's own samples (old and new forms) parse without loss."""

from __future__ import annotations

import pytest

from backend.library.infotext import format_infotext, parse_infotext
from backend.schema.requests import Txt2ImgRequest


def test_round_trip_recovers_the_request():
    req = Txt2ImgRequest(
        prompt="a lighthouse at dusk, (dramatic sky:1.2)\nsecond line",
        negative_prompt="blurry, lowres",
        seed=99,
        steps=31,
        guidance_scale=6.5,
        width=640,
        height=448,
        batch_size=1,
        sampler="DPM++ 2M SDE",
        schedule="Exponential",
        model="Model: with, punctuation",
    )
    text = format_infotext(req, 99)
    assert parse_infotext(text).to_request(Txt2ImgRequest) == req


def test_written_form_matches_a1111():
    req = Txt2ImgRequest(
        prompt="a lighthouse at dusk, (dramatic sky:1.2)",
        negative_prompt="blurry, lowres",
        steps=20,
        sampler="DPM++ 2M",
        schedule="Karras",
        guidance_scale=7,
        width=512,
        height=512,
        model="v1-5-pruned-emaonly",
    )
    assert format_infotext(req, 1234567890) == (
        "a lighthouse at dusk, (dramatic sky:1.2)\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x512, "
        "Model: v1-5-pruned-emaonly"
    )


def test_no_negative_line_when_empty():
    text = format_infotext(Txt2ImgRequest(prompt="cat"), 1)
    assert "Negative prompt" not in text
    assert parse_infotext(text).negative_prompt == ""


A1111_OLD = """masterpiece, portrait of a knight
Negative prompt: lowres, bad anatomy
Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, \
Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, Lora hashes: "detail: 1a2b, style: 3c4d", \
Version: v1.6.0"""

A1111_NEW = """a cat
wearing a hat
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 768x512, Model: sdxl, \
Hires upscale: 2, Hires upscaler: Latent"""


def test_a1111_old_form():
    info = parse_infotext(A1111_OLD)
    fields = info.request_fields()
    assert info.prompt == "masterpiece, portrait of a knight"
    assert info.negative_prompt == "lowres, bad anatomy"
    assert (fields["sampler"], fields["schedule"]) == ("DPM++ 2M", "Karras")
    assert fields["steps"] == 28 and fields["guidance_scale"] == 7.5 and fields["seed"] == 3141592653
    assert (fields["width"], fields["height"]) == (512, 768)
    assert fields["strength"] == 0.45
    # Unknown keys are kept, quoted values unquoted.
    assert info.params["Lora hashes"] == "detail: 1a2b, style: 3c4d"
    assert info.params["Clip skip"] == "2" and info.params["Version"] == "v1.6.0"


def test_a1111_new_form_without_negative_and_multiline_prompt():
    info = parse_infotext(A1111_NEW)
    fields = info.request_fields()
    assert info.prompt == "a cat\nwearing a hat" and info.negative_prompt == ""
    assert (fields["sampler"], fields["schedule"]) == ("Euler a", "Automatic")
    assert info.params["Hires upscaler"] == "Latent"


def test_a1111_hires_resize_is_read_back():
    # A1111 writes the resize size as sent ("1024x0": the height follows the aspect ratio) instead of Hires upscale.
    text = A1111_NEW.replace("Hires upscale: 2", "Denoising strength: 0.5, Hires resize: 1024x0")
    fields = parse_infotext(text).request_fields()
    assert (fields["enable_hr"], fields["hr_resize_x"], fields["hr_resize_y"]) == (True, 1024, 0)
    back = parse_infotext(text).to_request(Txt2ImgRequest)
    assert back.hires_resize and back.hires_size() == (1024, 680)  # 1024 × 512/768 = 682.7, rounded down to 8
    assert "hr_resize_x" not in parse_infotext(A1111_NEW).request_fields()


def test_multiline_negative_prompt():
    info = parse_infotext("p\nNegative prompt: a\nb\nSteps: 5, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 64x64")
    assert info.negative_prompt == "a\nb"


@pytest.mark.parametrize("text", ["just a prompt", "a prompt\nwith: colon"])
def test_text_without_parameters_is_all_prompt(text):
    info = parse_infotext(text)
    assert info.prompt == text and info.params == {}
