"""The A1111 web API (``/sdapi/v1``) driven by the real ``webuiapi`` client, against the Gradio endpoints."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time

import numpy as np
import pytest
import requests
import torch
import webuiapi
from gradio_client import Client, handle_file
from PIL import Image

from api.jobs import Jobs, QueueFull
from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import StepEvent
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.requests import ControlNetRequest, ControlUnit, Txt2ImgRequest
from backend.serving.logins import Brake, Logins
from backend.settings import Settings

from .api_snapshot import a1111_surface, check, gradio_surface
from .apphost import serve
from .conftest import TINY
from .test_api import ARGS

pytestmark = pytest.mark.api
DEMO = "Demo shapes (offline)"
# The same picture through the Gradio endpoint (its keywords) and through the A1111 API (A1111's).
GRADIO_ARGS = {k: v for k, v in ARGS.items() if k not in ("vae", "skip_cfg_after")}  # test_api's request
A1111_ARGS = dict(
    prompt="a red circle",
    negative_prompt="blurry",
    seed=77,
    steps=3,
    cfg_scale=5.0,
    width=64,
    height=64,
    batch_size=2,
    sampler_name="Euler a",
    scheduler="automatic",
    override_settings={"sd_model_checkpoint": TINY},
)


FIRST_ANSWER: list[requests.Response] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("a1111-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))
    with serve(engine, api=True) as url:
        # The very first request, at once after launch (test_the_api_answers_from_the_first_request).
        FIRST_ANSWER.append(requests.get(f"{url}sdapi/v1/samplers", timeout=30))
        yield engine, url, Client(url, verbose=False), webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def gradio_images(gallery) -> list[np.ndarray]:
    result = []
    for item in gallery:
        with Image.open(item["image"]) as img:
            result.append(pixels(img))
    return result


def test_api_surface_matches_the_snapshot(server):
    """Both APIs keep their shape: Gradio's named endpoints and the A1111 routes (tests/snapshots)."""
    _, url, client, _ = server
    check("gradio_api", gradio_surface(client.view_api(return_format="dict", print_info=False)))
    check("a1111_openapi", a1111_surface(requests.get(f"{url}docs/openapi.json").json()))


def test_txt2img_equals_the_gradio_endpoint(server):
    engine, url, client, api = server
    result = api.txt2img(**A1111_ARGS)
    gallery, infotext, _ = client.predict(**GRADIO_ARGS, api_name="/txt2img")
    assert [pixels(i).tolist() for i in result.images] == [g.tolist() for g in gradio_images(gallery)]
    assert result.info["all_seeds"] == [77, 78] and result.info["seed"] == 77
    assert result.info["infotexts"][0] == infotext and result.info["sd_model_name"] == TINY
    # Each PNG carries its own parameters, as A1111's do.
    assert parse_infotext(read_infotext(result.images[1])).params["Seed"] == "78"
    assert result.parameters["cfg_scale"] == 5.0 and result.parameters["sampler_name"] == "Euler a"


def test_eta_reaches_ddim_through_both_apis(server):
    """A1111's ``eta`` (which webuiapi sends as 1.0 by default) is DDIM's eta, as the page's "Eta (DDIM)" is."""
    engine, url, client, api = server
    ddim = {"sampler_name": "DDIM", "scheduler": "automatic", "batch_size": 1}
    result = api.txt2img(**{**A1111_ARGS, **ddim, "eta": 0.6})
    gradio = {**GRADIO_ARGS, "sampler": "DDIM", "schedule": "Automatic", "batch_size": 1, "eta": 0.6}
    gallery, infotext, _ = client.predict(**gradio, api_name="/txt2img")
    assert [pixels(i).tolist() for i in result.images] == [g.tolist() for g in gradio_images(gallery)]
    assert "Eta DDIM: 0.6" in infotext and result.info["infotexts"][0] == infotext
    without = api.txt2img(**{**A1111_ARGS, **ddim, "eta": 0.0})
    assert pixels(without.images[0]).tolist() != pixels(result.images[0]).tolist()


def test_combined_sampler_names_and_seed_behaviour(server):
    engine, url, client, api = server
    combined = api.txt2img(**{**A1111_ARGS, "batch_size": 1, "sampler_name": "DPM++ 2M Karras", "scheduler": None})
    gallery, infotext, _ = client.predict(
        **{**GRADIO_ARGS, "batch_size": 1, "sampler": "DPM++ 2M", "schedule": "Karras"}, api_name="/txt2img"
    )
    assert np.array_equal(pixels(combined.image), gradio_images(gallery)[0])
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in combined.info["infotexts"][0]
    other_seed = api.txt2img(**{**A1111_ARGS, "batch_size": 1, "seed": 78, "sampler_name": "Euler a"})
    first = api.txt2img(**{**A1111_ARGS, "batch_size": 1})
    assert not np.array_equal(pixels(first.image), pixels(other_seed.image))
    # n_iter continues the seeds after each batch, as A1111 does.
    iterated = api.txt2img(**{**A1111_ARGS, "batch_size": 1, "n_iter": 2})
    assert iterated.info["all_seeds"] == [77, 78]
    assert np.array_equal(pixels(iterated.images[1]), pixels(other_seed.image))


def test_img2img_and_inpaint_equal_the_gradio_endpoints(server, tmp_path, test_image):
    engine, url, client, api = server
    src = tmp_path / "in.png"
    test_image.save(src)
    common = {**A1111_ARGS, "batch_size": 1, "width": 96, "height": 64}
    gradio_common = {**GRADIO_ARGS, "batch_size": 1, "width": 0, "height": 0}
    result = api.img2img(images=[test_image], denoising_strength=0.5, resize_mode=0, **common)
    gallery, infotext, _ = client.predict(
        **gradio_common, image=handle_file(str(src)), strength=0.5, resize_mode="Just resize", api_name="/img2img"
    )
    assert np.array_equal(pixels(result.image), gradio_images(gallery)[0])
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]

    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (40, 8, 72, 40))
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    inpainted = api.img2img(
        images=[test_image], mask_image=mask, mask_blur=2, inpaint_full_res=False, denoising_strength=1.0, **common
    )
    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    gallery, _, _, _ = client.predict(
        **gradio_common, image=editor, mask=handle_file(str(mask_path)), strength=1.0, mask_blur=2,
        inpaint_area="Whole picture", padding=32, api_name="/inpaint",
    )  # fmt: skip
    got = pixels(inpainted.image)
    assert np.array_equal(got, gradio_images(gallery)[0])
    assert np.array_equal(got[:, :30], pixels(test_image)[:, :30])  # outside the mask: untouched
    assert not np.array_equal(got[8:40, 40:72], pixels(test_image)[8:40, 40:72])
    # Inverting the mask repaints the other side instead.
    inverted = api.img2img(
        images=[test_image], mask_image=mask, mask_blur=2, inpaint_full_res=False, denoising_strength=1.0,
        inpainting_mask_invert=1, **common,
    )  # fmt: skip
    assert np.array_equal(pixels(inverted.image)[20:30, 50:60], pixels(test_image)[20:30, 50:60])
    assert not np.array_equal(pixels(inverted.image)[:, :30], pixels(test_image)[:, :30])


def test_controlnet_canny_through_alwayson_scripts(server):
    engine, url, client, api = server
    reference = Image.new("RGB", (64, 64), "black")
    reference.paste((255, 255, 255), (16, 16, 48, 48))
    unit = webuiapi.ControlNetUnit(image=reference, module="canny", model="canny", weight=0.8, guidance_end=0.75,
                                   threshold_a=100, threshold_b=200, processor_res=64)  # fmt: skip
    args = {**A1111_ARGS, "batch_size": 1}
    steered = api.txt2img(controlnet_units=[unit], alwayson_scripts={}, **args)
    plain = api.txt2img(controlnet_units=[], alwayson_scripts={}, **args)  # webuiapi's defaults are mutable
    assert not np.array_equal(pixels(steered.image), pixels(plain.image))
    direct = engine.run(
        ControlNetRequest(
            prompt="a red circle", negative_prompt="blurry", seed=77, steps=3, guidance_scale=5.0, width=64,
            height=64, sampler="Euler a", schedule="Automatic", model=TINY, resize_mode="Resize and fill",
            units=(ControlUnit(image=reference, control_type="canny", conditioning_scale=0.8, guidance_end=0.75,
                               detect_resolution=64),),
        )
    )  # fmt: skip
    assert np.array_equal(pixels(steered.image), pixels(direct.images[0]))
    assert "Module: canny, Model: canny, Weight: 0.8" in steered.info["infotexts"][0]
    # The extension's own routes.
    assert "canny" in api.controlnet_model_list() and "canny" in api.controlnet_module_list()
    detected = api.controlnet_detect([reference], module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    edges = np.asarray(detected.images[0].convert("L"))
    assert edges[32, 14:18].max() > 100 and edges[32, 24:40].max() == 0
    # A unit the model cannot run is refused naming the unit's field.
    bad = requests.post(
        f"{url}sdapi/v1/txt2img",
        json={**args, "alwayson_scripts": {"controlnet": {"args": [{"module": "lineart", "image": b64(reference)}]}}},
    )
    assert bad.status_code == 422 and "alwayson_scripts.controlnet.args[0].module" in bad.json()["errors"]


def test_hires_fix_and_extras_equal_the_gradio_endpoints(server, tmp_path):
    engine, url, client, api = server
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 2}
    result = api.txt2img(**{**A1111_ARGS, "batch_size": 1, **hires, "denoising_strength": 0.6})
    gradio = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_steps": 2, "strength": 0.6}
    gallery, infotext, _ = client.predict(**{**GRADIO_ARGS, "batch_size": 1, **gradio}, api_name="/txt2img")
    assert result.image.size == (96, 96) and np.array_equal(pixels(result.image), gradio_images(gallery)[0])
    assert result.info["infotexts"][0] == infotext and result.info["denoising_strength"] == 0.6
    # A1111's default hires upscaler is "Latent"; the hires fix off reports no denoising strength.
    latent = api.txt2img(**{**A1111_ARGS, "batch_size": 1, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": None})
    assert latent.image.size == (96, 96) and "Hires upscaler: Latent" in latent.info["infotexts"][0]
    assert api.txt2img(**{**A1111_ARGS, "batch_size": 1}).info["denoising_strength"] is None
    assert "Latent (nearest-exact)" in [m["name"] for m in requests.get(f"{url}sdapi/v1/latent-upscale-modes").json()]
    # Extras: the same picture as the Gradio /upscale endpoint.
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    picture.save(tmp_path / "in.png")
    extras = api.extra_single_image(picture, upscaler_1="Lanczos", upscaling_resize=2)
    with Image.open(client.predict(handle_file(str(tmp_path / "in.png")), "Lanczos", 2.0, api_name="/upscale")) as img:
        assert extras.image.size == (60, 40) and np.array_equal(pixels(extras.image), pixels(img))
    post = lambda body: requests.post(f"{url}sdapi/v1/extra-single-image", json={"image": b64(picture), **body})  # noqa: E731
    for field, body in {
        "upscaler_1": {"upscaler_1": "R-ESRGAN 4x+"},
        "upscaling_resize": {"upscaling_resize": 100},
        "gfpgan_visibility": {"gfpgan_visibility": 1},
        "image": {"image": "not a picture"},
    }.items():
        response = post(body)
        assert response.status_code == 422 and response.json()["errors"].startswith(f"{field}:"), field


def test_hires_resize_to_a_size(server):
    engine, url, client, api = server
    one = {**A1111_ARGS, "batch_size": 1, "enable_hr": True, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 2}
    resized = api.txt2img(**one, hr_resize_x=128, hr_resize_y=128)  # webuiapi sends hr_scale 2 too: ignored
    infotext = resized.info["infotexts"][0]
    assert resized.image.size == (128, 128)
    params = parse_infotext(infotext).params
    assert (params["Size"], params["Hires resize"]) == ("64x64", "128x128") and "Hires upscale" not in params
    # The same size as ×2 of the 64² base: the same picture as hr_scale 2.
    assert np.array_equal(pixels(resized.image), pixels(api.txt2img(**one, hr_scale=2).image))
    # PNG info reads it back, as a request field and under A1111's key.
    assert parse_infotext(infotext).request_fields()["hr_resize_x"] == 128
    assert api.png_info(resized.image).parameters["Hires resize"] == "128x128"
    # One side: the other follows the base aspect ratio (64×96 → 128×192), the same picture as ×2.
    tall = {**one, "height": 96}
    side = api.txt2img(**tall, hr_resize_x=128)
    assert side.image.size == (128, 192) and "Hires resize: 128x0" in side.info["infotexts"][0]
    assert np.array_equal(pixels(side.image), pixels(api.txt2img(**tall, hr_scale=2).image))
    # Another aspect ratio: the middle of the upscale (tests/test_hires.py checks which pixels).
    assert api.txt2img(**one, hr_resize_x=128, hr_resize_y=96).image.size == (128, 96)
    post = lambda body: requests.post(f"{url}sdapi/v1/txt2img", json={**one, **body})  # noqa: E731
    for field, body, words in (
        ("hr_resize_x", {"hr_resize_x": 100}, "not a multiple of 8: use 96 or 104"),
        ("hr_resize_y", {"hr_resize_y": 4096}, "between 64 and 2048"),
        ("hr_resize_x", {"hr_resize_x": 1024}, "more than 8 times"),
        ("hr_resize_x", {"hr_resize_x": 2048, "height": 512}, "above the limit 2048"),
    ):
        response = post(body)
        assert response.status_code == 422 and response.json()["errors"].startswith(f"{field}:"), body
        assert words in response.json()["errors"], response.json()["errors"]
    assert post({}).status_code == 200  # the server keeps serving


def test_options_set_the_model_and_lists(server):
    engine, url, client, api = server
    assert set(api.util_get_model_names()) == set(engine.registry.names)
    try:
        api.util_set_model(DEMO)
        assert api.util_get_current_model() == DEMO
        result = api.txt2img(prompt="a blue square", seed=3, steps=2, width=64, height=64)
        assert result.info["sd_model_name"] == DEMO and "Model: Demo shapes" in result.info["infotexts"][0]
    finally:
        api.set_options({"sd_model_checkpoint": TINY})
    refused = requests.post(f"{url}sdapi/v1/options", json={"sd_model_checkpoint": "SD 9"})
    assert refused.status_code == 422 and refused.json()["errors"].startswith("sd_model_checkpoint:")
    assert "DPM++ 2M" in api.util_get_sampler_names() and "karras" in api.util_get_scheduler_names()
    assert api.get_upscalers()[0]["name"] == "None" and api.get_loras() == []
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert {s["name"] for s in api.get_prompt_styles()} == set(engine.presets.styles)


def test_clip_skip_per_request_and_as_an_option(server):
    engine, url, client, api = server
    args = dict(prompt="a red circle", seed=4, steps=2, width=64, height=64, sampler_name="Euler")
    plain = api.txt2img(**args)
    skipped = api.txt2img(**args, override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in skipped.info["infotexts"][0] and "Clip skip" not in plain.info["infotexts"][0]
    assert skipped.info["clip_skip"] == 2 and plain.info["clip_skip"] == 1  # info says what ran
    assert skipped.image.tobytes() != plain.image.tobytes()
    try:
        api.set_options({"CLIP_stop_at_last_layers": 2})  # later requests, as A1111's setting
        assert api.get_options()["CLIP_stop_at_last_layers"] == 2
        assert api.txt2img(**args).image.tobytes() == skipped.image.tobytes()
    finally:
        api.set_options({"CLIP_stop_at_last_layers": 1})
    refused = requests.post(f"{url}sdapi/v1/options", json={"CLIP_stop_at_last_layers": 13})
    assert refused.status_code == 422 and refused.json()["errors"].startswith("CLIP_stop_at_last_layers:")


def test_png_info_reads_back_the_parameters(server):
    engine, url, client, api = server
    made = api.txt2img(**{**A1111_ARGS, "batch_size": 1})
    info = api.png_info(made.image)
    assert info.info == made.info["infotexts"][0]
    assert info.parameters["Seed"] == "77" and info.parameters["Prompt"] == "a red circle"
    empty = requests.post(f"{url}sdapi/v1/png-info", json={"image": b64(Image.new("RGB", (8, 8)))})
    assert empty.status_code == 200 and empty.json()["info"] == ""


def _start_long_run(url: str, task: str, **extra) -> tuple[threading.Thread, dict]:
    box: dict = {}
    body = {**A1111_ARGS, "batch_size": 1, "steps": 150, "force_task_id": task, **extra}

    def work():
        box["response"] = requests.post(f"{url}sdapi/v1/txt2img", json=body, timeout=120)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, box


def _wait_for_preview(api, task: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = requests.get(f"{api.baseurl}/progress", params={"id_task": task}).json()
        if progress["current_image"] and progress["state"]["sampling_step"] >= 2:
            return progress
        time.sleep(0.05)
    raise AssertionError("no progress with a preview within 60 s")


def test_progress_during_a_run_and_interrupt_stops_only_the_callers_job(server):
    engine, url, client, api = server
    thread, box = _start_long_run(url, "mine")
    progress = _wait_for_preview(api, "mine")
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 150
    assert progress["current_task"] == "mine"
    assert Image.open(io.BytesIO(base64.b64decode(progress["current_image"]))).size == (64, 64)
    # Another caller's task id reaches nothing; the run goes on.
    other = requests.post(f"{url}sdapi/v1/interrupt", json={"id_task": "someone else"}).json()
    assert other == {"stopped": 0}
    step = progress["state"]["sampling_step"]

    def step_now() -> int:
        return requests.get(f"{url}sdapi/v1/progress", params={"id_task": "mine"}).json()["state"]["sampling_step"]

    # The run goes on: a later step arrives (polled, since a step's time depends on the machine's load).
    deadline = time.monotonic() + 30
    while step_now() <= step and time.monotonic() < deadline:
        time.sleep(0.1)
    assert step_now() > step
    api.interrupt()  # webuiapi sends no id: the caller's own jobs (here: by its address)
    thread.join(60)
    response = box["response"]
    assert response.status_code == 200
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and response.json()["images"] == []
    assert api.get_progress()["state"]["job_count"] == 0


def test_bad_input_gets_a1111_error_shape_naming_the_field(server):
    engine, url, client, api = server
    post = lambda body, route="txt2img": requests.post(f"{url}sdapi/v1/{route}", json=body)  # noqa: E731
    small = {"width": 64, "height": 64, "steps": 1, "override_settings": {"sd_model_checkpoint": TINY}}
    cases = {
        "steps": {**small, "steps": 0},
        "width": {**small, "width": 65},
        "cfg_scale": {**small, "cfg_scale": "lots"},
        "sampler_name": {**small, "sampler_name": "Eulerish"},
        "scheduler": {**small, "scheduler": "polyexponential"},
        "hr_scale": {**small, "enable_hr": True, "hr_scale": 0.5},
        "hr_upscaler": {**small, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"},
        "hr_resize_x": {**small, "enable_hr": True, "hr_resize_x": 100},
        "n_iter": {**small, "n_iter": 0},
    }
    for field, body in cases.items():
        response = post(body)
        assert response.status_code == 422, field
        error = response.json()
        assert set(error) == {"error", "detail", "body", "errors"}
        assert error["errors"].startswith(f"{field}:") and field in error["detail"][0]["loc"]
    assert "denoising_strength:" in post({**small, "init_images": [b64(Image.new("RGB", (64, 64)))],
                                          "denoising_strength": 2}, "img2img").json()["errors"]  # fmt: skip
    assert "init_images:" in post({**small, "init_images": ["not a picture"]}, "img2img").json()["errors"]
    # Unknown fields are ignored, as A1111 does.
    assert post({**small, "hr_upscaler": "Latent", "made_up_field": [1, 2]}).status_code == 200


def test_queue_full_is_503_and_save_images_is_honoured(server):
    engine, url, client, api = server
    state = serve.api_state
    small = {"width": 64, "height": 64, "steps": 1, "override_settings": {"sd_model_checkpoint": TINY}}
    state.jobs.capacity = 0
    try:
        full = requests.post(f"{url}sdapi/v1/txt2img", json=small)
    finally:
        state.jobs.capacity = engine.settings.queue_size
    assert full.status_code == 503 and "queue is full" in full.json()["detail"]
    before = set(engine.settings.output_dir.rglob("*.png"))
    requests.post(f"{url}sdapi/v1/txt2img", json=small).raise_for_status()
    assert set(engine.settings.output_dir.rglob("*.png")) == before  # A1111's default: save_images false
    saved = requests.post(f"{url}sdapi/v1/txt2img", json={**small, "save_images": True, "seed": 9})
    new = set(engine.settings.output_dir.rglob("*.png")) - before
    assert len(new) == 1 and json.loads(saved.json()["info"])["saved"] == [next(iter(new)).name]
    with Image.open(next(iter(new))) as img:
        assert parse_infotext(read_infotext(img)).params["Seed"] == "9"


def test_docs_describe_every_route(server):
    engine, url, client, api = server
    assert requests.get(f"{url}docs").status_code == 200
    paths = requests.get(f"{url}docs/openapi.json").json()["paths"]
    for route in ("txt2img", "img2img", "options", "sd-models", "samplers", "schedulers", "prompt-styles",
                  "upscalers", "latent-upscale-modes", "extra-single-image",
                  "loras", "embeddings", "png-info", "progress", "interrupt", "skip"):  # fmt: skip
        assert f"/sdapi/v1/{route}" in paths
    assert {"/controlnet/model_list", "/controlnet/module_list", "/controlnet/detect"} <= set(paths)


def test_with_auth_no_route_answers_without_the_login(tmp_path, cache_dir):
    engine = Engine(Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir))
    # A brake that never locks: this test makes one failed login per route on purpose (test_logins tests the brake).
    logins = Logins({"ann": "s3cret"}, Brake(attempts=10**6))
    with serve(engine, api=True, auth=logins) as url:
        schema = requests.get(f"{url}docs/openapi.json", auth=("ann", "s3cret")).json()
        routes = [(path, method) for path, item in schema["paths"].items() for method in item]
        routes += [("/docs", "get"), ("/docs/openapi.json", "get")]
        assert len(routes) >= 20
        for path, method in routes:
            for auth in (None, ("ann", "wrong"), ("bob", "s3cret")):
                response = requests.request(method, f"{url}{path.lstrip('/')}", json={}, auth=auth)
                assert response.status_code == 401, (path, method, auth)
                assert "s3cret" not in response.text
        api = webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1", username="ann", password="s3cret")
        made = api.txt2img(prompt="x", seed=1, steps=1, width=64, height=64,
                           override_settings={"sd_model_checkpoint": TINY})  # fmt: skip
        assert made.image.size == (64, 64)


class SlowEngine:
    """Runs until cancelled, one step at a time (for the queue's ownership rules)."""

    def __init__(self):
        self.started = threading.Event()

    def run(self, request, on_step=None, cancel=None):
        self.started.set()
        for step in range(1, 10_000):
            if cancel.is_set():
                raise Cancelled("generation stopped")
            on_step(StepEvent(step, 10_000, None))
            time.sleep(0.005)
        raise AssertionError("never stopped")


def test_jobs_stop_only_the_owners_job_and_the_shared_bound():
    engine = SlowEngine()
    waiting_in_gradio = [0]
    jobs = Jobs(engine, capacity=3, waiting_elsewhere=lambda: waiting_in_gradio[0])
    ann = jobs.admit("user:ann", "t1", 1)
    bob = jobs.admit("user:bob", "t2", 1)
    waiting_in_gradio[0] = 1
    with pytest.raises(QueueFull, match="queue is full"):
        jobs.admit("user:cid", None, 1)  # 2 API jobs + 1 Gradio event = the bound
    outcome = {}
    threads = [
        threading.Thread(target=lambda j=j: outcome.setdefault(j.owner, jobs.run(j, [Txt2ImgRequest()])))
        for j in (ann, bob)
    ]
    for thread in threads:
        thread.start()
    assert engine.started.wait(10)
    assert jobs.stop("user:bob", "t1") == 0  # bob cannot stop ann's task by its id
    assert jobs.stop("user:bob", None) == 1  # bob's own waiting job
    threads[1].join(10)
    assert outcome["user:bob"] == ([], True) and not ann.interrupt.is_set()
    assert jobs.progress("user:ann", None)[0] is ann and ann.progress > 0
    assert jobs.stop(None, "t1") == 1  # no login: the task id
    threads[0].join(10)
    assert outcome["user:ann"] == ([], True)


def test_listen_api_without_auth_warns_and_mounts(monkeypatch, caplog):
    import api.routes
    import app
    import ui.app

    calls = {}

    class FakeDemo:
        def launch(self, **kwargs):
            calls["launch"] = kwargs

    monkeypatch.setattr(app, "build_engine", lambda settings: type("E", (), {"startup_notice": "", "precision": ""})())
    monkeypatch.setattr(ui.app, "build_demo", lambda engine: FakeDemo())
    monkeypatch.setattr(ui.app, "launch_options", lambda engine, logins=None, lifespan=None: {"lifespan": lifespan})
    monkeypatch.setattr(api.routes, "api_lifespan", lambda *a: calls.setdefault("mounted", a) and "mount it")
    app.main(["--listen", "--api", "--offline", "--port", "7861"])
    assert "--listen --api without --auth" in caplog.text
    # Mounted by the server's lifespan, as it starts: no window where the page answers and the API does not.
    assert calls["launch"]["lifespan"] == "mount it" and calls["mounted"][1] is None
    assert calls["mounted"][3] == {"listen": True, "server_name": "0.0.0.0", "port": 7861, "share": False}


# What the clients of A1111's API ask for besides generating (SillyTavern, n8n, Open WebUI, webuiapi): each route
# through webuiapi's own method where it has one, else its session (its custom_post cannot read A1111's null).


def _post(api: webuiapi.WebUIApi, route: str):
    response = api.session.post(f"{api.baseurl}/{route}")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_api_answers_from_the_first_request(server):
    """The API is mounted as the server starts (api.routes.api_lifespan), before its first answer: a client that
    checks at once never finds the page without the API."""
    assert FIRST_ANSWER and FIRST_ANSWER[0].status_code == 200
    assert "Euler a" in [s["name"] for s in FIRST_ANSWER[0].json()]


def test_vaes_listed_and_every_refresh_rescans(server, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    import backend.models.registry as registry_module

    engine, url, client, api = server
    assert api.get_sd_vae() == [{"model_name": n, "filename": p.name} for n, p in engine.registry.vaes.items()]
    folder = tmp_path / "vae"
    folder.mkdir()
    monkeypatch.setattr(registry_module, "vae_dirs", lambda settings: [folder])
    try:
        save_file({"decoder.conv_in.weight": torch.zeros(1)}, folder / "new-vae.safetensors")
        assert "new-vae" not in [v["model_name"] for v in api.get_sd_vae()]
        assert api.refresh_checkpoints() is None  # A1111 answers null
        assert {"model_name": "new-vae", "filename": "new-vae.safetensors"} in api.get_sd_vae()
        assert api.custom_get("sd-modules", baseurl=True) == api.get_sd_vae()  # here the VAE files are the modules
        (folder / "new-vae.safetensors").unlink()
        assert _post(api, "refresh-vae") is None
        assert "new-vae" not in [v["model_name"] for v in api.get_sd_vae()]
    finally:
        monkeypatch.undo()
        engine.refresh_models()
    # Embeddings: the folders are scanned again.
    emb = tmp_path / "embeddings"
    emb.mkdir()
    save_file({"emb_params": torch.zeros(2, 32)}, emb / "shiny.safetensors")
    monkeypatch.setattr(engine.networks, "embedding_dirs", [emb])
    try:
        assert _post(api, "refresh-embeddings") is None
        assert api.get_embeddings()["loaded"]["shiny"]["vectors"] == 2
    finally:
        monkeypatch.undo()
        engine.networks.refresh()


def test_what_sd_studio_has_none_of_is_an_empty_list(server):
    engine, url, client, api = server
    assert api.get_hypernetworks() == [] and api.get_face_restorers() == [] and api.get_realesrgan_models() == []
    # The only scripts are the ControlNet and ADetailer extensions' (always on, through alwayson_scripts).
    both = ["controlnet", "adetailer"]
    assert api.get_scripts() == {"txt2img": both, "img2img": both}
    info = api.custom_get("script-info", baseurl=True)
    assert [(i["name"], i["is_alwayson"], i["is_img2img"], i["args"]) for i in info] == [
        (name, True, img2img, []) for name in both for img2img in (False, True)
    ]


def test_cmd_flags_and_memory(server):
    engine, url, client, api = server
    flags = api.get_cmd_flags()
    assert flags["api"] is True and flags["port"] == int(url.rstrip("/").rsplit(":", 1)[1])
    assert flags["api_auth"] is None and flags["gradio_auth"] is None  # logins are never shown
    assert flags["vae_dir"].split(os.pathsep)[0].endswith("vae") and flags["no_download_sd_model"] is True
    memory = api.get_memory()
    ram = memory["ram"]
    assert 0 < ram["used"] < ram["total"] and ram["free"] == ram["total"] - ram["used"]
    if torch.cuda.is_available():
        assert {"system", "active", "allocated", "reserved", "inactive", "events"} == set(memory["cuda"])
    else:
        assert memory["cuda"] == {"error": "unavailable"}  # as A1111 says it


def test_unload_and_reload_the_checkpoint(server):
    import gc
    import weakref

    engine, url, client, api = server
    api.set_options({"sd_model_checkpoint": TINY})
    api.txt2img(**{**A1111_ARGS, "batch_size": 1, "steps": 1})
    assert engine.cache.resident == [TINY]
    unet = weakref.ref(engine.cache.peek(TINY).base.unet)
    assert _post(api, "unload-checkpoint") == {}
    gc.collect()
    assert engine.cache.resident == [] and unet() is None, "the weights are freed, not only forgotten"
    assert _post(api, "reload-checkpoint") == {}
    assert engine.cache.resident == [TINY]
    assert api.txt2img(**{**A1111_ARGS, "batch_size": 1, "steps": 1}).image.size == (64, 64)


def test_extra_batch_images_upscales_each_as_extra_single_image(server):
    engine, url, client, api = server
    rng = np.random.default_rng(9)
    pictures = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in ((20, 30, 3), (12, 8, 3))]
    batch = api.extra_batch_images(pictures, upscaler_1="Lanczos", upscaling_resize=2)
    singles = [api.extra_single_image(p, upscaler_1="Lanczos", upscaling_resize=2).image for p in pictures]
    assert [i.size for i in batch.images] == [(60, 40), (16, 24)]
    assert all(np.array_equal(pixels(b), pixels(s)) for b, s in zip(batch.images, singles, strict=True))
    post = lambda body: requests.post(f"{url}sdapi/v1/extra-batch-images", json=body)  # noqa: E731
    one = {"imageList": [{"data": b64(pictures[0]), "name": "a"}, {"data": "not a picture", "name": "b"}]}
    for field, body in {
        "imageList[1].data": one,
        "imageList": {"imageList": []},
        "upscaler_1": {"imageList": one["imageList"][:1], "upscaler_1": "R-ESRGAN 4x+"},
    }.items():
        response = post(body)
        assert response.status_code == 422 and response.json()["errors"].startswith(f"{field}:"), field


def test_interrogate_says_there_is_no_captioning_model(server):
    engine, url, client, api = server
    with pytest.raises(RuntimeError, match="404"):
        api.interrogate(Image.new("RGB", (8, 8)))
    answer = requests.post(f"{url}sdapi/v1/interrogate", json={"image": b64(Image.new("RGB", (8, 8)))})
    error = answer.json()
    assert answer.status_code == 404 and set(error) == {"error", "detail", "body", "errors"}
    assert error["errors"].startswith("model: no captioning model 'clip'") and "png-info" in error["errors"]
    assert requests.post(f"{url}sdapi/v1/interrogate", json={}).json()["errors"].startswith("image:")


def test_new_routes_are_documented(server):
    engine, url, client, api = server
    paths = requests.get(f"{url}docs/openapi.json").json()["paths"]
    for route in ("sd-vae", "sd-modules", "refresh-checkpoints", "refresh-vae", "refresh-embeddings",
                  "extra-batch-images", "interrogate", "cmd-flags", "memory", "unload-checkpoint",
                  "reload-checkpoint", "scripts", "script-info", "face-restorers", "realesrgan-models",
                  "hypernetworks"):  # fmt: skip
        assert f"/sdapi/v1/{route}" in paths, route


# The Gradio side of the same server, over raw HTTP: calls Gradio itself answers with a 500 or {"error": null}.


def _page_call(url: str, fn: int, data: list, session: str) -> list[dict]:
    """Join Gradio's queue as the page does and read the event's messages until it completes."""
    joined = requests.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn, "session_hash": session})
    assert joined.status_code == 200, joined.text
    messages = []
    with requests.get(f"{url}gradio_api/queue/data", params={"session_hash": session}, stream=True, timeout=120) as s:
        for line in s.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1]["msg"] == "process_completed":
                    return messages
    raise AssertionError(f"no process_completed: {messages}")


def _page_event(url: str, api_name: str, **by_label) -> tuple[int, list]:
    """(fn_index, input values as the page sends them: each control's value, ``by_label`` changed) of an event."""
    config = requests.get(f"{url}config").json()
    components = {c["id"]: c for c in config["components"]}
    index, dep = next((d.get("id", i), d) for i, d in enumerate(config["dependencies"]) if d["api_name"] == api_name)
    data = []
    for component in (components[i] for i in dep["inputs"]):
        props = component.get("props", {})
        data.append(by_label.get(props.get("label"), props.get("value")))
    return index, data


def test_unknown_events_and_short_calls_get_a_4xx_that_says_why(server):
    engine, url, client, api = server
    gradio = f"{url}gradio_api"
    unknown = requests.post(f"{gradio}/queue/join", json={"data": [], "fn_index": 9999, "session_hash": "u1"})
    assert unknown.status_code == 404 and "fn_index 9999" in unknown.json()["detail"]
    assert requests.post(f"{gradio}/run/predict", json={"data": [], "fn_index": 9999}).status_code == 404
    for route in ("call/nope", "run/nope", "api/nope"):
        answer = requests.post(f"{gradio}/{route}", json={"data": []})
        assert answer.status_code == 404 and "/txt2img" in answer.json()["detail"], route
    # The preset row's Save is the page's, called by fn_index: not an endpoint by name, and a call without its
    # inputs is a 422 that says so (Gradio answered a 500, or {"error": null} through the queue).
    save, data = _page_event(url, "save", **{"Save current settings as": "mine"})
    assert requests.post(f"{gradio}/call/save", json={"data": data}).status_code == 404
    short = requests.post(f"{gradio}/run/predict", json={"fn_index": save, "data": []})
    assert short.status_code == 422 and f"takes {len(data)} input values; 0 were sent" in short.json()["detail"]
    joined = requests.post(f"{gradio}/queue/join", json={"fn_index": save, "data": [], "session_hash": "u2"})
    assert joined.status_code == 422 and "0 were sent" in joined.json()["detail"][0]["message"]
    # With its inputs it answers as on the page.
    done = _page_call(url, save, data, "u3")
    assert done[-1]["success"] and any("Saved preset 'mine'" in m.get("log", "") for m in done)


def test_not_a_number_through_the_queue_names_the_field(server):
    engine, url, client, api = server
    fn, data = _page_event(url, "txt2img", **{"Model": TINY, "Width": 64, "Height": 64, "Steps": 1})
    config = requests.get(f"{url}config").json()
    labels = [next(c for c in config["components"] if c["id"] == i).get("props", {}).get("label")
              for i in next(d for d in config["dependencies"] if d["api_name"] == "txt2img")["inputs"]]  # fmt: skip
    for label, bad in (("CFG scale", float("nan")), ("Seed (-1 = random)", float("inf")), ("Steps", float("-inf"))):
        sent = list(data)
        sent[labels.index(label)] = bad
        body = json.dumps({"data": sent, "fn_index": fn, "session_hash": f"n-{label}"})  # NaN as Python writes it
        joined = requests.post(f"{url}gradio_api/queue/join", data=body, headers={"content-type": "application/json"})
        assert joined.status_code == 200
        messages = []
        with requests.get(f"{url}gradio_api/queue/data", params={"session_hash": f"n-{label}"}, stream=True) as s:
            for line in s.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    messages.append(json.loads(line[5:]))
                    if messages[-1]["msg"] == "process_completed":
                        break
        error = messages[-1]["output"]["error"]
        assert error and error.startswith(f"{label}: ") and "not a number" in error, (label, error)
    # A number where a picture goes: Gradio's own file check failed there without a word ({"error": null}).
    upscale, data = _page_event(url, "upscale")
    body = json.dumps({"data": [float("nan"), *data[1:]], "fn_index": upscale, "session_hash": "n-image"})
    joined = requests.post(f"{url}gradio_api/queue/join", data=body, headers={"content-type": "application/json"})
    assert joined.status_code == 422 and joined.json()["detail"][0]["message"].startswith("Image: nan is not a file")


def test_unwritable_outputs_still_give_the_pictures_and_say_they_were_not_saved(server, tmp_path):
    engine, url, client, api = server
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = engine.writer.root
    engine.writer.root = blocker / "outputs"  # mkdir fails as on a full disk or a read-only folder
    try:
        small = {**A1111_ARGS, "batch_size": 2, "steps": 1, "save_images": True}
        made = requests.post(f"{url}sdapi/v1/txt2img", json=small)
        info = json.loads(made.json()["info"])
        assert made.status_code == 200 and len(made.json()["images"]) == 2 and info["saved"] == []
        assert len(info["warnings"]) == 1 and "2 of 2 pictures (seeds 77, 78) could not be saved" in info["warnings"][0]
        # The page: the pictures, and a warning toast that says so.
        fn, data = _page_event(url, "txt2img", **{"Model": TINY, "Width": 64, "Height": 64, "Steps": 1})
        done = _page_call(url, fn, data, "disk")
        assert done[-1]["success"] and done[-1]["output"]["data"][0]
        warnings = [m["log"] for m in done if m["msg"] == "log" and m.get("level") == "warning"]
        assert len(warnings) == 1 and "could not be saved in the output folder" in warnings[0]
    finally:
        engine.writer.root = root
