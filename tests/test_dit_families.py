"""FLUX and SD 3.x (the transformer families) on their tiny offline models: every tab's task through the engine,
the flow samplers, what the families refuse by field name, Distilled CFG and true CFG, the infotext round trip and
the sampler grid. The API tests at the end drive both APIs on the tiny FLUX."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from backend.families import family
from backend.generation.engine import Engine
from backend.grid.plan import GridRequest
from backend.grid.runner import GridRunner
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import (
    ControlNetRequest,
    ControlUnit,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from backend.schema.samplers import SAMPLER_TABLES, supported_schedules
from backend.settings import Settings

from .conftest import TINY, pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
MODELS = [FLUX, SD3]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("dit-out"), cache_dir=cache_dir))


def common(model: str) -> dict:
    """The fields every task shares: a 64² three-step Euler run on ``model``."""
    return dict(
        prompt="a red circle on a blue background",
        seed=7,
        steps=3,
        guidance_scale=1.0 if model == FLUX else 4.5,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=model,
    )


def txt2img(model: str, **changes) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**common(model), **changes})


def run(engine: Engine, request) -> np.ndarray:
    return pixels(engine.run(request).images[0])


def refusal(engine: Engine, request) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        engine.run(request)
    return caught.value.field, str(caught.value)


def test_the_families_and_their_models_are_registered(engine):
    flux, sd3 = family("flux"), family("sd3")
    assert (flux.sampler_table, sd3.sampler_table) == ("flow_sigmas", "flow")
    assert not flux.grid_batching and not sd3.grid_batching
    assert flux.true_cfg and not sd3.true_cfg and "distilled_cfg_scale" in flux.supports
    specs = {name: engine.registry.get(name) for name in engine.registry.names}
    hub = {spec.source: spec for spec in specs.values() if spec.family in ("flux", "sd3")}
    assert {
        "black-forest-labs/FLUX.1-dev",
        "black-forest-labs/FLUX.1-schnell",
        "stabilityai/stable-diffusion-3.5-medium",
        "stabilityai/stable-diffusion-3.5-large",
        "stabilityai/stable-diffusion-3.5-large-turbo",
        "builtin:tiny-flux",
        "builtin:tiny-sd3",
    } <= set(hub)
    assert engine.needs_download("FLUX.1 dev") and engine.needs_download("SD 3.5 Large")
    schnell = hub["black-forest-labs/FLUX.1-schnell"].defaults
    assert (schnell.steps, schnell.guidance_scale) == (4, 1.0)
    dev = hub["black-forest-labs/FLUX.1-dev"].defaults
    assert (dev.width, dev.height, dev.guidance_scale) == (1024, 1024, 1.0)


@pytest.mark.parametrize("model", MODELS)
def test_txt2img_same_seed_same_pixels_and_previews(engine, model):
    events = []
    result = engine.run(txt2img(model), on_step=events.append)
    first = pixels(result.images[0])
    assert first.shape == (64, 64, 3) and first.std() > 0
    assert np.array_equal(first, run(engine, txt2img(model)))
    assert not np.array_equal(first, run(engine, txt2img(model, seed=8)))
    assert [e.step for e in events] == [1, 2, 3]
    assert all(e.preview is not None and e.preview.size == (64, 64) for e in events)  # FLUX's packed latents too
    assert f"Model: {model}" in result.infotext and "Sampler: Euler, Schedule type: Automatic" in result.infotext


def test_the_preview_unpacks_flux_latents_as_the_pipeline_packs_them():
    import torch
    from diffusers import FluxPipeline

    from backend.generation.preview import unpack

    latents = torch.randn(1, 16, 8, 12)
    packed = FluxPipeline._pack_latents(latents, 1, 16, 8, 12)  # (1, 4 × 6 tokens, 16 × 2 × 2)
    assert torch.equal(unpack(packed[0], (96, 64)), latents[0])


@pytest.mark.parametrize("model", MODELS)
def test_img2img_keeps_the_size_and_follows_the_seed(engine, model, test_image):
    request = Img2ImgRequest(**{**common(model), "image": test_image, "strength": 0.7, "width": 0, "height": 0})
    out = run(engine, request)
    assert out.shape == (64, 96, 3)  # the picture's own size (FLUX's pipeline would pick its own otherwise)
    assert np.array_equal(out, run(engine, request))
    assert not np.array_equal(out, run(engine, request.replace(seed=8)))


@pytest.mark.parametrize("model", MODELS)
def test_inpaint_keeps_unmasked_pixels_exactly(engine, model, test_image):
    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (32, 16, 64, 48))
    request = InpaintRequest(
        **{**common(model), "image": test_image, "mask": mask, "strength": 0.9, "width": 0, "height": 0},
        mask_blur=0,
    )
    out = run(engine, request)
    source, inside = pixels(test_image), np.asarray(mask) > 0
    assert np.array_equal(out[~inside], source[~inside])
    assert not np.array_equal(out[inside], source[inside])
    assert np.array_equal(out, run(engine, request))


FLOW_PAIRS = [
    (model, sampler, schedule)
    for model, table in ((FLUX, "flow_sigmas"), (SD3, "flow"))
    for sampler in SAMPLER_TABLES[table]
    for schedule in supported_schedules(sampler, table)
]


@pytest.mark.parametrize("table", ["flow", "flow_sigmas"])
def test_flow_tables_promise_only_flags_their_schedulers_take(table):
    import inspect

    from backend.generation.samplers import scheduler_class
    from backend.schema.samplers import SCHEDULES

    for sampler, declared in SAMPLER_TABLES[table].items():
        accepted = inspect.signature(scheduler_class(sampler, table).__init__).parameters
        flags = {key for schedule in declared.schedules for key in SCHEDULES[schedule]}
        assert set(declared.config) | flags <= set(accepted), sampler
        assert not declared.eta


@pytest.mark.parametrize("model,sampler,schedule", FLOW_PAIRS)
def test_every_flow_sampler_and_schedule_runs(engine, model, sampler, schedule):
    result = engine.run(txt2img(model, sampler=sampler, schedule=schedule))
    out = pixels(result.images[0])
    assert out.std() > 0  # no NaN picture (a black one)
    assert f"Sampler: {sampler}, Schedule type: {schedule}" in result.infotext
    if (sampler, schedule) not in (("Euler", "Automatic"), ("Euler", "Simple")):  # Simple: Forge's name for Automatic
        assert not np.array_equal(out, run(engine, txt2img(model)))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "changes,field",
    [
        ({"clip_skip": 2}, "clip_skip"),
        ({"deep_cache": 3}, "deep_cache"),
        ({"skip_cfg_after": 0.5, "guidance_scale": 3.0}, "skip_cfg_after"),
        ({"sampler": "Euler a"}, "sampler"),  # an SD sampler the flow tables lack
        ({"sampler": "DPM++ 2M", "schedule": "Karras"}, "schedule"),
        ({"enable_hr": True, "hr_upscaler": "Latent"}, "hr_upscaler"),
        ({"prompt": "a cat embedding:style"}, "prompt"),  # LoRAs they take (tests/test_dit_lora.py)
    ],
)
def test_what_the_families_cannot_do_is_refused_by_field_name(engine, model, changes, field):
    name, message = refusal(engine, txt2img(model, **changes))
    assert name == field, message


def test_the_grid_refuses_what_a_single_run_refuses(engine):
    """The grid's planner asks the same family gate as a single run, embeddings included, before any work."""
    request = GridRequest(prompt="a cat embedding:style", model=FLUX, width=64, height=64, schedule="Automatic",
                          samplers=["Euler"], steps_list=[2])
    with pytest.raises(ValidationError) as refused:
        GridRunner(engine).run(request)
    assert refused.value.field == "prompt" and "do not take textual-inversion embeddings" in str(refused.value)


@pytest.mark.parametrize("model", MODELS)
def test_a_controlnet_type_they_lack_is_refused_by_control_type(engine, model, test_image):
    request = ControlNetRequest(**common(model), units=(ControlUnit(image=test_image, control_type="pose"),))
    name, message = refusal(engine, request)
    assert name == "control_type" and "no pose ControlNet" in message  # canny and depth: tests/test_dit_controlnet.py


def test_heun_is_sd3_only_and_distilled_cfg_flux_only(engine):
    assert refusal(engine, txt2img(FLUX, sampler="Heun"))[0] == "sampler"
    assert run(engine, txt2img(SD3, sampler="Heun")).std() > 0
    for model in (SD3, TINY):
        name, message = refusal(engine, txt2img(model, distilled_cfg_scale=5.0))
        assert name == "distilled_cfg_scale" and "leave it at 3.5" in message


def test_eta_is_ignored_as_a1111_ignores_it_for_samplers_without_eta(engine):
    result = engine.run(txt2img(FLUX, eta=0.7))
    assert np.array_equal(pixels(result.images[0]), run(engine, txt2img(FLUX)))
    assert "Eta" not in result.infotext


def test_distilled_cfg_and_true_cfg_on_flux(engine):
    plain = run(engine, txt2img(FLUX))
    distilled = engine.run(txt2img(FLUX, distilled_cfg_scale=7.0))
    assert "Distilled CFG Scale: 7" in distilled.infotext
    assert not np.array_equal(plain, pixels(distilled.images[0]))
    # True CFG is off at 1: a negative prompt changes nothing there, and acts above 1.
    assert np.array_equal(plain, run(engine, txt2img(FLUX, negative_prompt="green")))
    guided = run(engine, txt2img(FLUX, guidance_scale=3.0, negative_prompt="green"))
    assert not np.array_equal(plain, guided)
    assert not np.array_equal(guided, run(engine, txt2img(FLUX, guidance_scale=3.0)))
    # SD3's CFG scale is its real CFG.
    assert not np.array_equal(run(engine, txt2img(SD3)), run(engine, txt2img(SD3, guidance_scale=1.0)))


@pytest.mark.parametrize("model", MODELS)
def test_infotext_round_trip_gives_the_same_pixels(engine, model):
    changes = {"sampler": "UniPC", "schedule": "Karras", "negative_prompt": "green", "guidance_scale": 2.5}
    if model == FLUX:
        changes["distilled_cfg_scale"] = 5.0
    first = engine.run(txt2img(model, **changes))
    again = parse_infotext(first.infotext).to_request(Txt2ImgRequest)
    assert (again.sampler, again.schedule, again.model) == ("UniPC", "Karras", model)
    assert again.distilled_cfg_scale == changes.get("distilled_cfg_scale", 3.5)
    assert np.array_equal(pixels(first.images[0]), run(engine, again))


def test_sampler_grid_cells_equal_their_txt2img_runs(engine):
    request = GridRequest(
        prompt="a red circle", seed=3, steps=3, guidance_scale=1.0, width=64, height=64, model=FLUX,
        schedule="Karras", samplers=["Euler", "DPM++ 2M"], steps_list=[2, 3],
    )
    result = GridRunner(engine).run(request)
    assert not result.batched and len(result.images) == 4
    # Karras where the sampler has it on FLUX (Euler), the model's own schedule where it does not (DPM++ 2M).
    assert result.plan.x_labels == ["Euler Karras", "DPM++ 2M"]
    for cell, image, text in zip(result.plan.cells, result.images, result.infotexts, strict=True):
        single = engine.run(cell)
        assert np.array_equal(pixels(image), pixels(single.images[0])), (cell.sampler, cell.steps)
        assert text == single.infotext
    with pytest.raises(ValidationError) as caught:
        GridRunner(engine).run(dataclasses.replace(request, samplers=["Euler", "Heun"]))
    assert caught.value.field == "sampler"


def test_hires_fix_and_outpainting_on_flux(engine, test_image):
    hires = engine.run(txt2img(FLUX, enable_hr=True, hr_upscaler="Lanczos", hr_scale=1.5, strength=0.6))
    assert hires.images[0].size == (96, 96) and "Hires upscale: 1.5" in hires.infotext
    request = InpaintRequest(
        **{**common(FLUX), "image": test_image, "mask": None, "width": 0, "height": 0},
        outpaint_right=32,
        mask_blur=0,
    )
    out = pixels(engine.run(request).images[0])
    assert out.shape == (64, 128, 3)
    assert np.array_equal(out[:, :96], pixels(test_image))  # the picture itself is kept exactly


# --- both APIs on the tiny FLUX ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    import webuiapi
    from gradio_client import Client

    from .apphost import serve

    out = tmp_path_factory.mktemp("dit-api-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))
    with serve(engine, api=True) as url:
        yield engine, Client(url, verbose=False), webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")


@pytest.mark.api
def test_flux_through_gradio_client_and_the_a1111_api(server):
    from .test_a1111_api import gradio_images
    from .test_api import ARGS

    engine, client, api = server
    gradio = {**ARGS, "model": FLUX, "sampler": "Euler", "schedule": "Karras", "guidance_scale": 1.0, "seed": 11}
    gallery, infotext, _ = client.predict(**gradio, api_name="/txt2img")
    result = api.txt2img(
        prompt=gradio["prompt"],
        negative_prompt=gradio["negative_prompt"],
        seed=11,
        steps=gradio["steps"],
        cfg_scale=1.0,
        width=64,
        height=64,
        batch_size=2,
        sampler_name="Euler",
        scheduler="karras",
        override_settings={"sd_model_checkpoint": FLUX},
    )  # webuiapi sends eta=1.0 as A1111 clients do: ignored, as A1111 ignores it for Euler
    through_gradio = [g.tolist() for g in gradio_images(gallery)]
    assert [np.asarray(i.convert("RGB")).tolist() for i in result.images] == through_gradio
    assert result.info["infotexts"][0] == infotext and result.info["sd_model_name"] == FLUX
    assert "Sampler: Euler, Schedule type: Karras" in infotext
    single = engine.run(txt2img(FLUX, **{k: gradio[k] for k in ("prompt", "negative_prompt", "steps", "batch_size")},
                                seed=11, schedule="Karras", save=False))
    assert [pixels(i).tolist() for i in single.images] == [pixels(i).tolist() for i in result.images]


@pytest.mark.api
def test_distilled_cfg_through_both_apis(server):
    """The "Distilled CFG" control (every tab's `distilled_cfg_scale` keyword, Forge's A1111 body field) reaches
    FLUX's distilled guidance and its infotext, through the Gradio API and the A1111 API alike."""
    from .test_a1111_api import gradio_images
    from .test_api import ARGS

    engine, client, api = server
    gradio = {**ARGS, "model": FLUX, "sampler": "Euler", "schedule": "Automatic", "guidance_scale": 1.0,
              "seed": 12, "batch_size": 1}
    default, _, _ = client.predict(**gradio, api_name="/txt2img")
    gallery, infotext, _ = client.predict(**{**gradio, "distilled_cfg_scale": 7.0}, api_name="/txt2img")
    assert "Distilled CFG Scale: 7" in infotext
    assert [g.tolist() for g in gradio_images(gallery)] != [g.tolist() for g in gradio_images(default)]
    body = {
        "prompt": gradio["prompt"],
        "negative_prompt": gradio["negative_prompt"],
        "seed": 12,
        "steps": gradio["steps"],
        "cfg_scale": 1.0,
        "width": 64,
        "height": 64,
        "sampler_name": "Euler",
        "scheduler": "automatic",
        "override_settings": {"sd_model_checkpoint": FLUX},
        "distilled_cfg_scale": 7.0,
    }
    answer = api.session.post(f"{api.baseurl}/txt2img", json=body).json()
    assert json.loads(answer["info"])["infotexts"][0] == infotext
