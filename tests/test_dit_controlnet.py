"""ControlNet on FLUX and SD 3.x (FluxControlNetModel, SD3ControlNetModel) with their tiny random-weight canny and
depth ControlNets: the control picture and the conditioning scale steer the pixels, the same seed gives the same
pixels, what their pipelines lack is refused by field name; then the ControlNet tab through gradio_client and the
A1111 ``alwayson_scripts.controlnet`` give the engine's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.families import family
from backend.generation.engine import Engine
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, ControlUnit
from backend.settings import Settings

from .conftest import pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
MODELS = [FLUX, SD3]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("dit-cn-out"), cache_dir=cache_dir))


def reference(shift: int = 0) -> Image.Image:
    """A white block on black (clear canny edges), moved right by ``shift`` pixels."""
    picture = Image.new("RGB", (64, 64), "black")
    picture.paste((255, 255, 255), (12 + shift, 16, 40 + shift, 48))
    return picture


def request(model: str, *units: ControlUnit, **changes) -> ControlNetRequest:
    fields = dict(prompt="a red circle", seed=7, steps=3, guidance_scale=1.0 if model == FLUX else 4.5, width=64,
                  height=64, sampler="Euler", schedule="Automatic", model=model)  # fmt: skip
    return ControlNetRequest(**{**fields, **changes}, units=units or (ControlUnit(image=reference()),))


def run(engine: Engine, req: ControlNetRequest) -> np.ndarray:
    return pixels(engine.run(req).images[0])


def test_the_families_declare_their_controlnets(engine):
    for name, cls in (("flux", "FluxControlNetModel"), ("sd3", "SD3ControlNetModel")):
        assert family(name).controlnet_types == {"canny", "depth"} and family(name).controlnet_model == cls
    hub = {spec.name: dict(spec.controlnets) for spec in engine.registry.models.values()}
    assert hub["FLUX.1 dev"]["canny"] == "InstantX/FLUX.1-dev-Controlnet-Canny"
    assert hub["SD 3.5 Large"]["depth"] == "stabilityai/stable-diffusion-3.5-large-controlnet-depth"
    assert hub[FLUX] == {"canny": "builtin:tiny-flux-controlnet-canny", "depth": "builtin:tiny-flux-controlnet-depth"}


@pytest.mark.parametrize("model", MODELS)
def test_the_control_picture_and_scale_steer_and_the_seed_repeats(engine, model):
    steered = engine.run(request(model))
    first = pixels(steered.images[0])
    assert first.shape == (64, 64, 3) and first.std() > 0
    assert "ControlNet 0: \"Module: canny, Model: canny, Weight: 1" in steered.infotext
    assert np.array_equal(first, run(engine, request(model)))  # same seed, same pixels
    moved = run(engine, request(model, ControlUnit(image=reference(shift=20))))
    assert not np.array_equal(first, moved)  # the control picture changes the pixels
    off = run(engine, request(model, ControlUnit(image=reference(), conditioning_scale=0.0)))
    assert not np.array_equal(first, off)  # conditioning scale 0 vs 1


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_depth_seeds_and_two_units(engine, model):
    one = run(engine, request(model))
    assert not np.array_equal(one, run(engine, request(model, seed=8)))
    depth = ControlUnit(image=reference(), control_type="depth", preprocessor="none")
    canny_map = ControlUnit(image=reference(), preprocessor="none")
    assert not np.array_equal(run(engine, request(model, canny_map)), run(engine, request(model, depth)))
    second = ControlUnit(image=reference(shift=20), control_type="depth", preprocessor="none", conditioning_scale=0.8)
    two = request(model, ControlUnit(image=reference()), second)
    assert not np.array_equal(one, run(engine, two))
    assert np.array_equal(run(engine, two), run(engine, two))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "changes,field",
    [
        ({"units": (ControlUnit(image=reference(), control_type="pose"),)}, "control_type"),
        ({"guess_mode": True}, "guess_mode"),
        ({"init_image": reference(), "strength": 0.6}, "init_image"),
    ],
)
def test_what_their_controlnet_pipelines_lack_is_refused_by_field(engine, model, changes, field):
    with pytest.raises(ValidationError) as caught:
        engine.run(request(model).replace(**changes))
    assert caught.value.field == field, str(caught.value)


# --- the ControlNet tab's endpoint and the A1111 API ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    import webuiapi
    from gradio_client import Client

    from .apphost import serve

    out = tmp_path_factory.mktemp("dit-cn-api-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))
    with serve(engine, api=True) as url:
        yield engine, Client(url, verbose=False), webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")


@pytest.mark.api
@pytest.mark.parametrize("model", [FLUX, pytest.param(SD3, marks=pytest.mark.slow)])
def test_controlnet_tab_and_alwayson_scripts_on_dit_models(server, model, tmp_path):
    import webuiapi
    from gradio_client import handle_file

    from .test_a1111_api import gradio_images
    from .test_api import ARGS

    engine, client, api = server
    cfg = 1.0 if model == FLUX else 4.5
    src = tmp_path / "reference.png"
    reference().save(src)
    common = {**ARGS, "model": model, "sampler": "Euler", "schedule": "Automatic", "guidance_scale": cfg,
              "batch_size": 1, "seed": 21}  # fmt: skip
    unit = dict(control_type="canny", conditioning_scale=0.8, guidance_end=0.75)
    gallery, infotext, _, _, _ = client.predict(**common, image=handle_file(str(src)), **unit, api_name="/controlnet")
    direct = engine.run(request(model, ControlUnit(image=reference(), **unit), seed=21, negative_prompt="blurry",
                                steps=ARGS["steps"], guidance_scale=cfg))  # fmt: skip
    assert np.array_equal(gradio_images(gallery)[0], pixels(direct.images[0]))
    assert f"Model: {model}" in infotext and "Module: canny, Model: canny, Weight: 0.8" in infotext
    a1111 = dict(prompt="a red circle", negative_prompt="blurry", seed=21, steps=ARGS["steps"], cfg_scale=cfg,
                 width=64, height=64, sampler_name="Euler", scheduler="automatic",
                 override_settings={"sd_model_checkpoint": model})  # fmt: skip
    cn = webuiapi.ControlNetUnit(image=reference(), module="canny", model="canny", weight=0.8, guidance_end=0.75,
                                 threshold_a=100, threshold_b=200, processor_res=64)  # fmt: skip
    steered = api.txt2img(controlnet_units=[cn], alwayson_scripts={}, **a1111)
    assert np.array_equal(pixels(steered.image), pixels(direct.images[0]))
    assert steered.info["sd_model_name"] == model
    weak = webuiapi.ControlNetUnit(image=reference(), module="canny", model="canny", weight=0.0, processor_res=64)
    assert not np.array_equal(pixels(api.txt2img(controlnet_units=[weak], alwayson_scripts={}, **a1111).image),
                              pixels(steered.image))  # fmt: skip
