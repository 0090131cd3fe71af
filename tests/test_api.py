"""End to end through gradio_client: the named endpoint returns what the UI shows."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from backend.engine import Engine
from backend.infotext import parse_infotext
from backend.outputs import read_infotext
from backend.requests import Txt2ImgRequest
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY

pytestmark = pytest.mark.api

ARGS = dict(
    prompt="a red circle",
    negative_prompt="blurry",
    seed=77,
    steps=3,
    guidance_scale=5.0,
    width=64,
    height=64,
    batch_size=2,
    sampler="Euler a",
    schedule="Automatic",
    model=TINY,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    engine = Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("api-out"), cache_dir=cache_dir))
    with serve(engine) as url:
        yield engine, Client(url, verbose=False)


def test_txt2img_endpoint_keywords_and_png_images(app):
    engine, client = app
    params = [
        p["parameter_name"] for p in client.view_api(return_format="dict")["named_endpoints"]["/txt2img"]["parameters"]
    ]
    assert params == list(ARGS)
    gallery, infotext, seed = client.predict(**ARGS, api_name="/txt2img")
    assert seed == 77 and len(gallery) == 2
    assert parse_infotext(infotext).params["Sampler"] == "Euler a"
    # The API returns exactly what the engine makes for the same request, losslessly.
    direct = engine.run(Txt2ImgRequest(**ARGS)).images
    for item, expected_seed, image in zip(gallery, (77, 78), direct, strict=True):
        with Image.open(item["image"]) as img:
            assert img.format == "PNG" and img.size == (64, 64)
            assert parse_infotext(read_infotext(img)).params["Seed"] == str(expected_seed)
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(image.convert("RGB")))


def test_bad_input_gives_a_clear_error_and_server_keeps_serving(app):
    _, client = app
    with pytest.raises(AppError, match="width 100 is not a multiple of 8: use 96 or 104"):
        client.predict(**{**ARGS, "width": 100}, api_name="/txt2img")
    with pytest.raises(AppError, match="does not support schedule 'Karras'"):
        client.predict(**{**ARGS, "sampler": "DDIM", "schedule": "Karras"}, api_name="/txt2img")
    with pytest.raises(AppError, match="not available offline"):
        client.predict(**{**ARGS, "model": "SD 1.5"}, api_name="/txt2img")
    _, _, seed = client.predict(**ARGS, api_name="/txt2img")
    assert seed == 77


def test_random_seed_is_returned(app):
    _, client = app
    _, infotext, seed = client.predict(**{**ARGS, "seed": -1, "batch_size": 1}, api_name="/txt2img")
    assert seed >= 0 and f"Seed: {seed}" in infotext
