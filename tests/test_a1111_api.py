"""The A1111 web API (``/sdapi/v1``) driven by the real ``webuiapi`` client, against the Gradio endpoints."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from gradio_client import Client, handle_file
from PIL import Image

from api.jobs import Jobs, QueueFull
from backend.generation.engine import Cancelled, Engine, StepEvent
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


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("a1111-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))
    with serve(engine, api=True) as url:
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
        app = object()

        def launch(self, **kwargs):
            calls["launch"] = kwargs

        def block_thread(self):
            calls["blocked"] = True

    monkeypatch.setattr(app, "build_engine", lambda settings: type("E", (), {"startup_notice": "", "precision": ""})())
    monkeypatch.setattr(ui.app, "build_demo", lambda engine: FakeDemo())
    monkeypatch.setattr(ui.app, "launch_options", lambda engine, logins=None: {})
    monkeypatch.setattr(api.routes, "mount_api", lambda *a: calls.setdefault("mounted", a))
    app.main(["--listen", "--api", "--offline"])
    assert "--listen --api without --auth" in caplog.text
    assert calls["launch"]["prevent_thread_lock"] is True and calls["blocked"] and calls["mounted"][2] is None
