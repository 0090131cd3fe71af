"""Hires fix: base picture → upscale → img2img at the larger size, on the shipped demo model; infotext; refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.engine import Engine
from backend.infotext import parse_infotext
from backend.requests import Txt2ImgRequest, ValidationError, validate
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
