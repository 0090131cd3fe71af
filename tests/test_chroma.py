"""Chroma (the third DiT family) on its tiny offline model: txt2img with real CFG and negative prompt, img2img,
inpaint, hires fix, the sampler grid, what the family refuses by field name, and both APIs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.families import family
from backend.generation.engine import Engine
from backend.grid.plan import GridRequest
from backend.grid.runner import GridRunner
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, ControlUnit, Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels

CHROMA = "Tiny Chroma (offline test model)"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("chroma-out"), cache_dir=cache_dir))


def common(**changes) -> dict:
    fields = dict(prompt="a red circle on a blue background", seed=7, steps=3, guidance_scale=4.0, width=64,
                  height=64, sampler="Euler", schedule="Automatic", model=CHROMA)  # fmt: skip
    return {**fields, **changes}


def run(engine: Engine, request) -> np.ndarray:
    return pixels(engine.run(request).images[0])


def test_the_family_and_its_models_are_registered(engine):
    chroma = family("chroma")
    assert chroma.sampler_table == "flow_given_sigmas" and chroma.packed_latents and not chroma.true_cfg
    assert not chroma.controlnet_types and chroma.task_pipelines["inpaint"] == "ChromaInpaintPipeline"
    hd = next(spec for spec in engine.registry.models.values() if spec.source == "lodestones/Chroma1-HD")
    assert hd.family == "chroma" and engine.needs_download(hd.name)
    assert (hd.defaults.width, hd.defaults.height, hd.defaults.steps, hd.defaults.guidance_scale) == (1024, 1024, 26, 4)
    assert engine.registry.get(CHROMA).source == "builtin:tiny-chroma"


def test_txt2img_seed_cfg_and_negative_prompt(engine):
    result = engine.run(Txt2ImgRequest(**common()))
    first = pixels(result.images[0])
    assert first.shape == (64, 64, 3) and first.std() > 0
    assert f"Model: {CHROMA}" in result.infotext and "CFG scale: 4" in result.infotext
    assert np.array_equal(first, run(engine, Txt2ImgRequest(**common())))
    # De-distilled: real CFG, and the negative prompt acts at the default CFG (no true-CFG switch as on FLUX).
    assert not np.array_equal(first, run(engine, Txt2ImgRequest(**common(guidance_scale=1.0))))
    assert not np.array_equal(first, run(engine, Txt2ImgRequest(**common(negative_prompt="green"))))


def test_img2img_and_inpaint_keep_the_unmasked_pixels(engine, test_image):
    img2img = Img2ImgRequest(**common(width=0, height=0), image=test_image, strength=0.7)
    out = run(engine, img2img)
    assert out.shape == (64, 96, 3) and np.array_equal(out, run(engine, img2img))
    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (32, 16, 64, 48))
    inpaint = InpaintRequest(**common(width=0, height=0), image=test_image, mask=mask, strength=0.9, mask_blur=0)
    painted, source, inside = run(engine, inpaint), pixels(test_image), np.asarray(mask) > 0
    assert np.array_equal(painted[~inside], source[~inside])
    assert not np.array_equal(painted[inside], source[inside])


def test_hires_fix_with_a_picture_upscaler(engine):
    hires = engine.run(Txt2ImgRequest(**common(), enable_hr=True, hr_upscaler="Lanczos", hr_scale=1.5, strength=0.6))
    assert hires.images[0].size == (96, 96) and "Hires upscale: 1.5" in hires.infotext


def test_sampler_grid_cell_equals_its_txt2img_run(engine):
    request = GridRequest(
        prompt="a red circle", seed=3, steps=2, guidance_scale=4.0, width=64, height=64, model=CHROMA,
        schedule="Automatic", samplers=["Euler", "UniPC"], steps_list=[2],
    )
    result = GridRunner(engine).run(request)
    assert len(result.images) == 2
    assert result.plan.x_labels == ["Euler", "UniPC"]
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))
    assert np.array_equal(pixels(result.images[1]), run(engine, result.plan.cells[1]))  # the UniPC cell


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"enable_hr": True, "hr_upscaler": "Latent"}, "hr_upscaler"),
        ({"prompt": "a cat embedding:style"}, "prompt"),  # embeddings; LoRAs it takes (test_chroma_files.py)
        ({"distilled_cfg_scale": 5.0}, "distilled_cfg_scale"),
        ({"sampler": "Heun"}, "sampler"),
        ({"sampler": "DPM++ 2M"}, "sampler"),  # its scheduler takes no given sigmas
    ],
)
def test_what_chroma_cannot_do_is_refused_by_field_name(engine, changes, field):
    with pytest.raises(ValidationError) as caught:
        engine.run(Txt2ImgRequest(**common(**changes)))
    assert caught.value.field == field, str(caught.value)


def test_controlnet_is_refused_by_control_type(engine, test_image):
    with pytest.raises(ValidationError) as caught:
        engine.run(ControlNetRequest(**common(), units=(ControlUnit(image=test_image, control_type="canny"),)))
    assert caught.value.field == "control_type" and "no canny ControlNet" in str(caught.value)


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    import webuiapi
    from gradio_client import Client

    from .apphost import serve

    engine = Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("chroma-api"), cache_dir=cache_dir))
    with serve(engine, api=True) as url:
        yield engine, Client(url, verbose=False), webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")


@pytest.mark.api
def test_chroma_through_gradio_client_and_the_a1111_api(server):
    from .test_a1111_api import gradio_images
    from .test_api import ARGS

    engine, client, api = server
    gradio = {**ARGS, "model": CHROMA, "sampler": "Euler", "schedule": "Automatic", "guidance_scale": 4.0,
              "seed": 11, "batch_size": 1}  # fmt: skip
    gallery, infotext, _ = client.predict(**gradio, api_name="/txt2img")
    result = api.txt2img(prompt=gradio["prompt"], negative_prompt=gradio["negative_prompt"], seed=11,
                         steps=gradio["steps"], cfg_scale=4.0, width=64, height=64, sampler_name="Euler",
                         scheduler="automatic", override_settings={"sd_model_checkpoint": CHROMA})  # fmt: skip
    assert [pixels(result.image).tolist()] == [g.tolist() for g in gradio_images(gallery)]
    assert result.info["infotexts"][0] == infotext and result.info["sd_model_name"] == CHROMA
    single = engine.run(Txt2ImgRequest(**common(seed=11, negative_prompt=gradio["negative_prompt"],
                                                steps=gradio["steps"], prompt=gradio["prompt"])))  # fmt: skip
    assert np.array_equal(pixels(single.images[0]), pixels(result.image))
