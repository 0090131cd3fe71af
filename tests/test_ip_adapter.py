"""IP-Adapter (issue #29) on the tiny model: a random adapter in the ip-adapter_sd15 layout and a tiny CLIP vision
encoder, built offline into a temporary models/ipadapter folder."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from api.codec import Limits
from api.convert import txt2img_request
from api.models import Txt2ImgBody
from backend.families import family
from backend.generation import ip_adapter
from backend.models import tiny
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, Txt2ImgRequest

from .conftest import TINY, pixels

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
