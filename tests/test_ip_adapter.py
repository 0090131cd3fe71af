"""IP-Adapter (issue #29) on the tiny model: a random adapter in the ip-adapter_sd15 layout and a tiny CLIP vision
encoder, built offline into a temporary models/ipadapter folder."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from api.codec import Limits
from api.convert import txt2img_request
from api.models import Txt2ImgBody
from api.routes import mount_api
from backend.families import family
from backend.generation import ip_adapter
from backend.library.infotext import parse_infotext
from backend.models import tiny
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, Txt2ImgRequest
from ui.ip_adapter import FIELDS as IP_FIELDS
from ui.send import sent_fields

from .apphost import serve
from .conftest import TINY, endpoint_args, pixels

NAME = "ip-adapter_tiny"


@pytest.fixture(scope="module")
def folder(shared_engine, tmp_path_factory):
    """models/ipadapter with the tiny adapter and encoder; the UNet is left without an adapter afterwards."""
    path = tmp_path_factory.mktemp("ipadapter")
    base = shared_engine.cache.model(TINY).base
    tiny.save_ip_adapter(path / f"{NAME}.safetensors", base.unet)
    tiny.save_image_encoder(path / ip_adapter.ENCODER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SDSTUDIO_IPADAPTER_DIR", str(path))
        yield path
    ip_adapter.unload(base)


@pytest.fixture
def txt2img() -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a red circle", seed=3, steps=2, width=64, height=64, model=TINY, sampler="Euler",
                          schedule="Automatic")


REFERENCE = Image.new("RGB", (40, 40), (200, 20, 20))


def test_the_reference_steers_weight_zero_is_base_and_leaving_it_out_restores_base(shared_engine, folder, txt2img):
    base = pixels(shared_engine.run(txt2img).images[0])
    steered_request = txt2img.replace(ip_adapter=NAME, ip_adapter_image=(REFERENCE,))
    steered = shared_engine.run(steered_request)
    assert not np.array_equal(pixels(steered.images[0]), base)
    assert np.array_equal(pixels(shared_engine.run(steered_request).images[0]), pixels(steered.images[0]))
    assert f"IP-Adapter: {NAME}, IP-Adapter weight: 1" in steered.infotext
    other = txt2img.replace(ip_adapter=NAME, ip_adapter_image=(Image.new("RGB", (40, 40), (20, 20, 200)),))
    assert not np.array_equal(pixels(shared_engine.run(other).images[0]), pixels(steered.images[0]))
    zero = pixels(shared_engine.run(steered_request.replace(ip_adapter_weight=0.0)).images[0])
    assert np.abs(zero - base).mean() < 1.0
    after = shared_engine.run(txt2img)
    assert np.array_equal(pixels(after.images[0]), base) and "IP-Adapter" not in after.infotext


def test_img2img_takes_it_too(shared_engine, folder, test_image):
    request = Img2ImgRequest(prompt="a red circle", image=test_image, seed=7, steps=4, strength=0.75, model=TINY,
                             sampler="Euler", schedule="Automatic")
    plain = pixels(shared_engine.run(request).images[0])
    steered = request.replace(ip_adapter=NAME, ip_adapter_image=(REFERENCE, REFERENCE.rotate(90)))
    assert not np.array_equal(pixels(shared_engine.run(steered).images[0]), plain)
    assert np.array_equal(pixels(shared_engine.run(request).images[0]), plain)


def test_missing_files_name_the_folder(shared_engine, folder, txt2img, tmp_path, monkeypatch):
    with pytest.raises(ValidationError) as err:
        shared_engine.run(txt2img.replace(ip_adapter="nope", ip_adapter_image=(REFERENCE,)))
    assert err.value.field == "ip_adapter" and str(folder) in str(err.value) and NAME in str(err.value)
    (tmp_path / f"{NAME}.safetensors").write_bytes((folder / f"{NAME}.safetensors").read_bytes())
    monkeypatch.setenv("SDSTUDIO_IPADAPTER_DIR", str(tmp_path))
    with pytest.raises(ValidationError) as err:
        shared_engine.run(txt2img.replace(ip_adapter=NAME, ip_adapter_image=(REFERENCE,)))
    assert err.value.field == "ip_adapter" and str(tmp_path / "image_encoder") in str(err.value)


def test_families_without_it_refuse_by_field_name(txt2img):
    request = txt2img.replace(ip_adapter=NAME, ip_adapter_image=(REFERENCE,))
    assert family("sd15").unsupported(request) is None and family("sdxl").unsupported(request) is None
    assert family("flux").unsupported(request)[0] == "ip_adapter"
    assert family("sd2").unsupported(request)[0] == "ip_adapter"


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_a1111_ip_adapter_unit_sets_the_fields():
    unit = {"module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15 [6a3f6166]", "weight": 0.6,
            "image": _b64(REFERENCE)}
    body = Txt2ImgBody(prompt="x", alwayson_scripts={"controlnet": {"args": [unit]}})
    request = txt2img_request(body, TINY, Limits(max_bytes=10**8, max_pixels=10**7))
    assert isinstance(request, Txt2ImgRequest)  # not a ControlNet request: no other unit
    assert (request.ip_adapter, request.ip_adapter_weight) == ("ip-adapter_sd15", 0.6)
    assert np.array_equal(pixels(request.ip_adapter_image[0]), pixels(REFERENCE))


@pytest.fixture(scope="module")
def client(shared_engine, folder):
    with serve(shared_engine) as url:
        yield Client(url, verbose=False)


def test_the_pages_controls_reach_the_pipeline_and_send_restores_them(shared_engine, client, tmp_path):
    """The txt2img and ControlNet tabs' IP-Adapter accordion (ui/ip_adapter.py), through their gradio_client
    endpoints: weight 1 steers, weight 0 is the base picture, and the picture is the engine's for the same request."""
    endpoints = client.view_api(return_format="dict")["named_endpoints"]
    for name in ("/txt2img", "/img2img", "/controlnet"):
        assert [p["parameter_name"] for p in endpoints[name]["parameters"]][-3:] == list(IP_FIELDS)
    reference = tmp_path / "reference.png"
    REFERENCE.save(reference)
    args = endpoint_args(seed=3, width=64, height=64, prompt="a red circle")
    chosen = {"ip_adapter": NAME, "ip_adapter_image": [{"image": handle_file(str(reference)), "caption": None}]}
    plain = Txt2ImgRequest(**{**args, "styles": ()})
    base = pixels(shared_engine.run(plain).images[0])
    gallery, infotext, _ = client.predict(**args, **chosen, ip_adapter_weight=1.0, api_name="/txt2img")
    steered = pixels(Image.open(gallery[0]["image"]))
    direct = shared_engine.run(plain.replace(ip_adapter=NAME, ip_adapter_image=(REFERENCE,)))
    assert np.array_equal(steered, pixels(direct.images[0])) and not np.array_equal(steered, base)
    gallery, _, _ = client.predict(**args, **chosen, ip_adapter_weight=0.0, api_name="/txt2img")
    assert np.abs(pixels(Image.open(gallery[0]["image"])) - base).mean() < 1.0
    # each reference picture is checked and decoded as any picture input: a truncated one is refused by name
    cut = tmp_path / "cut.png"
    cut.write_bytes(reference.read_bytes()[: reference.stat().st_size // 2])
    bad = {**chosen, "ip_adapter_image": [{"image": handle_file(str(cut)), "caption": None}]}
    with pytest.raises(AppError, match="could not be decoded"):
        client.predict(**args, **bad, ip_adapter_weight=1.0, api_name="/txt2img")
    # PNG info / Send: the adapter and its weight come back from the infotext; the pictures cannot.
    read = parse_infotext(infotext).request_fields()
    assert (read["ip_adapter"], read["ip_adapter_weight"]) == (NAME, 1.0)
    assert set(sent_fields(Txt2ImgRequest, dict.fromkeys(IP_FIELDS))) == {"ip_adapter", "ip_adapter_weight"}
    # The ControlNet tab's accordion reaches its pipeline too.
    control = Image.new("RGB", (64, 64))
    control.paste((255, 255, 255), (16, 16, 48, 48))
    control.save(tmp_path / "control.png")
    unit = {"image": handle_file(str(tmp_path / "control.png")), "control_type": "canny"}
    runs = [client.predict(**args, **unit, **chosen, ip_adapter_weight=w, api_name="/controlnet")[0] for w in (0, 1)]
    assert not np.array_equal(*(pixels(Image.open(run[0]["image"])) for run in runs))


def test_the_a1111_lists_name_the_modules_models_and_scripts(shared_engine, folder):
    """/controlnet/module_list has inpaint_only and the ip-adapter_* modules, model_list the adapter files; the
    scripts lists have the ADetailer extension's always-on script beside ControlNet's (lower-cased, as A1111)."""
    app = FastAPI()
    mount_api(app, shared_engine)
    with TestClient(app) as http:
        modules = http.get("/controlnet/module_list").json()["module_list"]
        models = http.get("/controlnet/model_list").json()["model_list"]
        scripts = http.get("/sdapi/v1/scripts").json()
        info = http.get("/sdapi/v1/script-info").json()
    assert {"none", "canny", "inpaint_only", "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl"} <= set(modules)
    assert {"canny", "inpaint", NAME} <= set(models)
    assert scripts == {"txt2img": ["controlnet", "adetailer"], "img2img": ["controlnet", "adetailer"]}
    alwayson = {(i["name"], i["is_img2img"]) for i in info if i["is_alwayson"]}
    assert alwayson >= {("adetailer", False), ("adetailer", True)}
