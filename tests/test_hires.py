"""Hires fix: base picture → upscale → img2img at the larger size, on the shipped demo model; infotext; refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.schema.validate import validate
from backend.settings import Settings
from tests.conftest import TINY

DEMO = "Demo shapes (offline)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("hires"), save_outputs=False))


def base_request(**changes) -> Txt2ImgRequest:
    request = Txt2ImgRequest(
        prompt="a yellow square on a black background",
        seed=7,
        steps=12,
        guidance_scale=6.0,
        width=64,
        height=64,
        sampler="DPM++ 2M",
        schedule="Automatic",
        model=DEMO,
    )
    return request.replace(**changes)


@pytest.mark.slow
def test_hires_doubles_the_picture_and_keeps_its_colours(demo):
    base = demo.run(base_request()).images[0]
    hires = demo.run(base_request(enable_hr=True, hr_scale=2.0, hr_steps=8, strength=0.5))
    big = hires.images[0]
    assert base.size == (64, 64) and big.size == (128, 128)
    down = np.asarray(big.resize((64, 64), Image.Resampling.BOX), dtype=np.float32)
    ref = np.asarray(base, dtype=np.float32)
    # The second pass refines the upscaled picture: same layout and colours, not a new picture.
    assert np.abs(down - ref).mean() < 20, np.abs(down - ref).mean()
    # … and it is not just the upscaled base: the img2img pass changed pixels.
    lanczos = np.asarray(base.resize((128, 128), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(np.asarray(big, dtype=np.float32) - lanczos).mean() > 1


def test_hires_infotext_round_trips(demo):
    result = demo.run(base_request(enable_hr=True, hr_scale=1.5, hr_steps=5, strength=0.6, steps=6))
    text = result.infotext
    assert "Size: 64x64" in text and "Hires upscale: 1.5" in text and "Hires steps: 5" in text
    assert "Hires upscaler: Lanczos" in text and "Denoising strength: 0.6" in text
    assert result.images[0].size == (96, 96)
    back = parse_infotext(text).to_request(Txt2ImgRequest)
    assert back.enable_hr and back.hr_scale == 1.5 and back.hr_steps == 5 and back.strength == 0.6
    assert back.hr_upscaler == "Lanczos" and (back.width, back.height) == (64, 64)


@pytest.mark.slow
def test_latent_hires_resizes_the_latents(demo):
    """A1111's "Latent" upscaler: the first pass's latents are resized, not its decoded picture."""
    request = base_request(steps=6, enable_hr=True, hr_scale=1.5, hr_steps=4, strength=0.6)
    base = demo.run(base_request(steps=6)).images[0]
    latent = demo.run(request.replace(hr_upscaler="Latent"))
    lanczos = demo.run(request).images[0]
    big = latent.images[0]
    assert big.size == (96, 96) and parse_infotext(latent.infotext).params["Hires upscaler"] == "Latent"
    down = np.asarray(big.resize((64, 64), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(down - np.asarray(base, dtype=np.float32)).mean() < 25  # same layout and colours
    assert np.abs(np.asarray(big, dtype=np.int16) - np.asarray(lanczos, dtype=np.int16)).mean() > 1


@pytest.mark.slow
def test_strength_reaches_the_hires_pass(shared_engine, tiny_request):
    request = tiny_request.replace(enable_hr=True, hr_scale=2.0, hr_steps=4)
    low = np.asarray(shared_engine.run(request.replace(strength=0.3)).images[0], dtype=np.int16)
    high = np.asarray(shared_engine.run(request.replace(strength=0.9)).images[0], dtype=np.int16)
    assert low.shape == (128, 128, 3) and np.abs(low - high).mean() > 1


def test_hires_beyond_the_size_limit_names_hr_scale():
    settings = Settings(offline=True, max_width=512, max_height=512)
    request = Txt2ImgRequest(width=384, height=256, enable_hr=True, hr_scale=2.0, model=TINY)
    with pytest.raises(ValidationError) as err:
        validate(request, settings)
    assert err.value.field == "hr_scale" and "1.33" in str(err.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hr_scale": 0.5}, "hr_scale"),
        ({"hr_upscaler": "nope"}, "hr_upscaler"),
        ({"hr_steps": -1}, "hr_steps"),
        ({"strength": 1.5}, "strength"),
    ],
)
def test_bad_hires_fields(changes, field):
    request = Txt2ImgRequest(width=64, height=64, enable_hr=True, model=TINY, **changes)
    with pytest.raises(ValidationError) as err:
        validate(request, Settings(offline=True))
    assert err.value.field == field


def test_hires_off_ignores_its_fields():
    request = Txt2ImgRequest(width=64, height=64, hr_scale=100.0, hr_upscaler="nope", model=TINY)
    assert validate(request, Settings(offline=True)).enable_hr is False


def test_hires_resize_sizes_follow_a1111():
    """``hr_resize_x``/``hr_resize_y``: one side keeps the base aspect ratio; both, of another aspect ratio, upscale to
    cover that size and keep its middle (A1111's ``calculate_target_resolution`` and latent crop)."""
    request = Txt2ImgRequest(width=64, height=96, enable_hr=True, model=TINY)
    assert request.replace(hr_resize_x=128).hires_size() == (128, 192)
    assert request.replace(hr_resize_y=120).hires_size() == (80, 120)  # 120 × 64/96 = 80
    assert request.replace(hr_resize_y=100 + 4).hires_size() == (64, 104)  # 69.3 rounded down to 64
    wide = request.replace(hr_resize_x=128, hr_resize_y=128)  # base narrower than the target: match the width
    assert (wide.hires_size(), wide.hires_upscale_size(), wide.hires_crop()) == ((128, 128), (128, 192), (0, 32))
    tall = request.replace(width=96, height=64, hr_resize_x=128, hr_resize_y=160)
    assert (tall.hires_upscale_size(), tall.hires_crop()) == ((240, 160), (56, 0))  # 112 // 8 // 2 × 8
    same = request.replace(hr_resize_x=128, hr_resize_y=192)
    assert same.hires_upscale_size() == same.hires_size() == (128, 192) and same.hires_crop() == (0, 0)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"hr_resize_x": 100}, "hr_resize_x", "not a multiple of 8: use 96 or 104"),
        ({"hr_resize_y": 4096}, "hr_resize_y", "0 (not set) or between 64 and 2048, got 4096"),
        ({"hr_resize_x": -8}, "hr_resize_x", "0 (not set) or between 64"),
        ({"hr_resize_x": 1024}, "hr_resize_x", "more than 8 times the first pass's size"),
        ({"hr_resize_x": 128, "hr_resize_y": 32}, "hr_resize_y", "between 64 and 2048, got 32"),
        (
            {"width": 128, "height": 128, "hr_resize_x": 64, "hr_resize_y": 64},
            "hr_resize_x",
            "smaller than the first pass",
        ),
        ({"height": 512, "hr_resize_x": 1024}, "hr_resize_x", "hires height 8192, above the limit 2048"),
        ({"height": 512, "hr_resize_x": 2048, "hr_resize_y": 64}, "hr_resize_x", "upscaled (before the crop) height"),
    ],
)
def test_bad_hires_resize_names_the_field(changes, field, words):
    request = Txt2ImgRequest(
        **{"width": 64, "height": 64, "enable_hr": True, "model": TINY, "hr_scale": 0.5, **changes}
    )
    with pytest.raises(ValidationError) as err:  # hr_scale 0.5 is ignored once a resize size is set, as in A1111
        validate(request, Settings(offline=True))
    assert err.value.field == field and words in str(err.value)


def test_hires_resize_to_another_aspect_crops_the_middle(shared_engine, tiny_request, monkeypatch):
    """64² → 128×96: upscaled to 128² and the middle 96 rows kept (A1111's crop), never squashed."""
    import backend.generation.engine

    seen = []
    original = backend.generation.engine.call_pipeline

    def recording(pipe, config, request, kwargs, callback):
        seen.append(kwargs.get("image"))
        return original(pipe, config, request, kwargs, callback)

    monkeypatch.setattr(backend.generation.engine, "call_pipeline", recording)
    hires = tiny_request.replace(enable_hr=True, hr_steps=10, strength=0.1)  # one gentle step at the hires size
    for upscaler in ("Lanczos", "Latent"):
        seen.clear()
        square = shared_engine.run(hires.replace(hr_upscaler=upscaler, hr_resize_x=128, hr_resize_y=128))
        square_input = seen[1]
        seen.clear()
        cropped = shared_engine.run(hires.replace(hr_upscaler=upscaler, hr_resize_x=128, hr_resize_y=96))
        assert cropped.images[0].size == (128, 96) and "Hires resize: 128x96" in cropped.infotext
        if upscaler == "Lanczos":  # the second pass starts from the middle of the same 128² upscale
            assert np.array_equal(np.asarray(seen[1]), np.asarray(square_input.crop((0, 16, 128, 112))))
        else:  # latents: cropped in latent space; one gentle step keeps the result close to the square's middle
            big = np.asarray(square.images[0], dtype=np.float32)
            out = np.asarray(cropped.images[0], dtype=np.float32)
            squashed = np.asarray(square.images[0].resize((128, 96), Image.Resampling.LANCZOS), dtype=np.float32)
            middle = np.abs(out - big[16:112]).mean()
            assert middle < 5, middle
            assert middle * 5 < np.abs(out - squashed).mean() and middle * 5 < np.abs(out - big[:96]).mean()
