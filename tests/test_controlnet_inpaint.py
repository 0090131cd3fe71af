"""The ControlNet inpaint strategy (issue #29): the tiny model's own UNet steered by its tiny inpaint ControlNet, whose
control image is the picture with the masked pixels at -1 (the ControlNet extension's ``inpaint_only``)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageFilter

from api.codec import Limits
from api.convert import img2img_request
from api.models import Img2ImgBody
from backend.families import family
from backend.generation.inpaint_control import inpaint_condition
from backend.generation.tasks import pipeline_key, prepare
from backend.schema.errors import ValidationError
from backend.schema.inpaint_control import CONTROLNET_INPAINT
from backend.schema.requests import InpaintRequest

from .apphost import serve
from .conftest import TINY, endpoint_args, pixels


@pytest.fixture
def request_(test_image, mask) -> InpaintRequest:
    return InpaintRequest(prompt="a red circle", image=test_image, mask=mask, seed=7, steps=4, strength=1.0,
                          mask_blur=2, guidance_scale=5.0, sampler="Euler", schedule="Automatic", model=TINY,
                          inpaint_strategy=CONTROLNET_INPAINT)


_RUNS: dict[str, object] = {}  # the steered run, made once and shared by the tests below (the suite stays fast)


@pytest.fixture
def steered(shared_engine, request_):
    if "steered" not in _RUNS:
        _RUNS["steered"] = shared_engine.run(request_)
    return _RUNS["steered"]


def outside(mask: Image.Image, distance: int) -> np.ndarray:
    return np.asarray(mask.filter(ImageFilter.MaxFilter(2 * distance + 1))) == 0


def test_the_control_image_is_the_picture_with_the_mask_at_minus_one(test_image, mask):
    control = inpaint_condition(test_image, mask)
    assert control.shape == (1, 3, 64, 96) and control.dtype == torch.float32
    inside = torch.from_numpy(np.asarray(mask) > 127)
    assert bool((control[0][:, inside] == -1).all())
    kept = torch.from_numpy(np.asarray(test_image, dtype=np.float32).transpose(2, 0, 1) / 255)
    assert torch.equal(control[0][:, ~inside], kept[:, ~inside])


def test_the_family_says_what_its_inpaint_controlnet_sees_where_it_repaints(request_, mask):
    # SD 1.5's control_v11p_sd15_inpaint takes -1 there, the SDXL inpaint ControlNet solid white
    assert family("sd15").inpaint_control_masked == -1.0 and family("sdxl").inpaint_control_masked == 1.0
    inside = torch.from_numpy(np.asarray(mask) > 127)
    for masked in (-1.0, 1.0):
        control = prepare(request_.replace(width=96, height=64), masked=masked).kwargs["control_image"]
        assert bool((control[0][:, inside] == masked).all())


def test_unmasked_pixels_kept_and_same_seed_same_pixels(shared_engine, request_, steered, test_image, mask):
    result = steered
    out, src = pixels(result.images[0]), pixels(test_image)
    keep = outside(mask, 3 * request_.mask_blur)
    assert np.array_equal(out[keep], src[keep])
    assert not np.array_equal(out, src)
    assert np.array_equal(out, pixels(shared_engine.run(request_).images[0]))
    assert "Inpaint strategy: ControlNet inpaint" in result.infotext
    assert 'ControlNet 0: "Module: inpaint_only' in result.infotext
    # The derived pipeline is diffusers' ControlNet inpaint one, sharing the base model's UNet (no second copy).
    pipe = shared_engine.cache.pipeline(TINY, *pipeline_key(request_))
    assert type(pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"
    assert pipe.unet is shared_engine.cache.model(TINY).base.unet


def test_the_control_changes_the_masked_region(shared_engine, request_, steered, mask):
    blended = pixels(shared_engine.run(request_.replace(inpaint_strategy="auto")).images[0])
    inside = np.asarray(mask) == 255
    assert not np.array_equal(pixels(steered.images[0])[inside], blended[inside])


def test_a_family_without_it_refuses_by_field_name(request_):
    assert family("sd15").unsupported(request_) is None
    refusal = family("flux").unsupported(request_)
    assert refusal is not None and refusal[0] == "inpaint_strategy"
    assert family("sd15").unsupported(request_.replace(inpaint_strategy="nope"))[0] == "inpaint_strategy"


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_a1111_inpaint_only_unit_reaches_it(shared_engine, request_, steered, test_image, mask):
    limits = Limits(max_bytes=10**8, max_pixels=10**7)
    unit = {"module": "inpaint_only", "model": "control_v11p_sd15_inpaint", "mask": _b64(mask)}
    body = Img2ImgBody(init_images=[_b64(test_image)], prompt="x", alwayson_scripts={"controlnet": {"args": [unit]}})
    converted = img2img_request(body, TINY, limits)
    assert isinstance(converted, InpaintRequest) and converted.inpaint_strategy == CONTROLNET_INPAINT
    assert np.array_equal(np.asarray(converted.mask), np.asarray(mask))
    run = request_.replace(image=converted.image, mask=converted.mask)
    assert np.array_equal(pixels(shared_engine.run(run).images[0]), pixels(steered.images[0]))
    without_mask = Img2ImgBody(init_images=[_b64(test_image)], alwayson_scripts={"controlnet": {"args": [{
        "module": "inpaint_only"}]}})
    with pytest.raises(ValidationError) as err:
        img2img_request(without_mask, TINY, limits)
    assert err.value.field == "mask"
    weaker = Img2ImgBody(init_images=[_b64(test_image)], alwayson_scripts={"controlnet": {"args": [{
        **unit, "weight": 1.0, "guidance_end": 1.0}]}})
    assert img2img_request(weaker, TINY, limits).inpaint_strategy == CONTROLNET_INPAINT  # the defaults, sent
    weaker.alwayson_scripts["controlnet"]["args"][0]["weight"] = 0.5
    with pytest.raises(ValidationError) as err:  # not dropped silently: the strategy runs at weight 1
        img2img_request(weaker, TINY, limits)
    assert err.value.field.endswith("weight")


def test_the_controlnet_tabs_inpaint_only_keeps_unmasked_pixels_and_needs_a_mask(shared_engine, test_image, mask,
                                                                                   tmp_path):
    """The ControlNet tab's control type inpaint (preprocessor inpaint_only) with its mask upload, through its
    gradio_client endpoint: the ControlNet inpaint strategy's picture, the inpaint tab's request's pixels."""
    test_image.save(tmp_path / "picture.png")
    mask.save(tmp_path / "mask.png")
    args = endpoint_args(seed=7, steps=4, width=0, height=0, guidance_scale=5.0)
    picture = handle_file(str(tmp_path / "picture.png"))
    unit = {"image": picture, "control_type": "inpaint", "preprocessor": "inpaint_only"}
    with serve(shared_engine) as url:
        client = Client(url, verbose=False)
        gallery, infotext, _, shown, _ = client.predict(
            **args, **unit, mask=handle_file(str(tmp_path / "mask.png")), api_name="/controlnet"
        )
        with pytest.raises(AppError, match="Mask: control type inpaint needs a mask"):
            client.predict(**args, **unit, api_name="/controlnet")
        # what the strategy does not take is refused by name, not dropped
        with pytest.raises(AppError, match="Control weight: control type inpaint runs the unit at 1"):
            client.predict(**args, **unit, conditioning_scale=0.5, mask=handle_file(str(tmp_path / "mask.png")),
                           api_name="/controlnet")
        with pytest.raises(AppError, match="Init picture: control type inpaint repaints"):
            client.predict(**args, **unit, init_image=picture, mask=handle_file(str(tmp_path / "mask.png")),
                           api_name="/controlnet")
    out = pixels(Image.open(gallery[0]["image"]))
    keep = outside(mask, 3 * 4)  # the default mask blur
    assert np.array_equal(out[keep], pixels(test_image)[keep]) and not np.array_equal(out, pixels(test_image))
    assert "Inpaint strategy: ControlNet inpaint" in infotext and shown is not None  # the mask used, shown
    same = InpaintRequest(**{**args, "styles": ()}, image=test_image, mask=mask, strength=1.0,
                          resize_mode="Crop and resize", inpaint_strategy=CONTROLNET_INPAINT)
    assert np.array_equal(out, pixels(shared_engine.run(same).images[0]))
