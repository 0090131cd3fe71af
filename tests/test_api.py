"""End to end through gradio_client: the named endpoint returns what the UI shows."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY

pytestmark = pytest.mark.api

ARGS = dict(
    prompt="a red circle",
    negative_prompt="blurry",
    seed=77,
    subseed=-1,
    subseed_strength=0.0,
    seed_resize_from_w=0,
    seed_resize_from_h=0,
    steps=3,
    guidance_scale=5.0,
    width=64,
    height=64,
    batch_size=2,
    sampler="Euler a",
    schedule="Automatic",
    model=TINY,
    styles=[],
    vae="",
    text_encoders=[],
    skip_cfg_after=1.0,
    deep_cache=1,
    dit_cache=0.0,
    eta=0.0,
    distilled_cfg_scale=3.5,
    combinatorial_prompts=False,
    ad_model="None",
    ad_prompt="",
    ad_negative_prompt="",
    ad_confidence=0.3,
    ad_denoising_strength=0.4,
    ad_mask_blur=4,
    ad_inpaint_only_masked_padding=32,
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
    hires = ["enable_hr", "hr_upscaler", "hr_scale", "hr_steps", "strength"]
    assert params == [*ARGS, *hires, "ip_adapter", "ip_adapter_weight", "ip_adapter_image"]
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


def test_bad_input_gives_a_clear_error_and_server_keeps_serving(app, capfd, caplog):
    _, client = app
    caplog.set_level("INFO", logger="sd_studio.ui")
    with pytest.raises(AppError, match="width 100 is not a multiple of 8: use 96 or 104"):
        client.predict(**{**ARGS, "width": 100}, api_name="/txt2img")
    with pytest.raises(AppError, match="does not support schedule 'Karras'"):
        client.predict(**{**ARGS, "sampler": "DDIM", "schedule": "Karras"}, api_name="/txt2img")
    with pytest.raises(AppError, match="not available offline"):
        client.predict(**{**ARGS, "model": "SD 1.5"}, api_name="/txt2img")
    _, _, seed = client.predict(**ARGS, api_name="/txt2img")
    assert seed == 77
    # Input errors are one log line each, never a traceback (those are for real failures).
    assert "Traceback" not in capfd.readouterr().err
    refused = [r.getMessage() for r in caplog.records if r.name == "sd_studio.ui"]
    assert len(refused) == 3 and "width 100 is not a multiple of 8" in refused[0]


def test_skip_cfg_after_through_the_api(app):
    """The option reaches the engine (another picture), is written to the infotext, and is refused by name."""
    engine, client = app
    one = {**ARGS, "batch_size": 1}
    _, full, _ = client.predict(**one, api_name="/txt2img")
    gallery, cut, _ = client.predict(**{**one, "skip_cfg_after": 0.5}, api_name="/txt2img")
    assert "Skip CFG after" not in full
    assert parse_infotext(cut).request_fields()["skip_cfg_after"] == 0.5
    direct = engine.run(Txt2ImgRequest(**{**one, "skip_cfg_after": 0.5})).images[0]
    with Image.open(gallery[0]["image"]) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(direct.convert("RGB")))
    with pytest.raises(AppError, match=r"Skip CFG after .*less than minimum value 0.05"):
        client.predict(**{**one, "skip_cfg_after": 0.01}, api_name="/txt2img")


def test_deep_cache_through_the_api(app):
    """The DeepCache control reaches the engine (the API's picture is the engine's with it) and the infotext."""
    engine, client = app
    one = {**ARGS, "batch_size": 1, "steps": 6, "deep_cache": 3}
    gallery, info, _ = client.predict(**one, api_name="/txt2img")
    assert parse_infotext(info).request_fields()["deep_cache"] == 3
    direct = engine.run(Txt2ImgRequest(**one)).images[0]
    plain = engine.run(Txt2ImgRequest(**{**one, "deep_cache": 1})).images[0]
    with Image.open(gallery[0]["image"]) as img:
        got = np.asarray(img.convert("RGB"))
    assert np.array_equal(got, np.asarray(direct.convert("RGB")))
    assert not np.array_equal(got, np.asarray(plain.convert("RGB")))
    with pytest.raises(AppError, match=r"DeepCache interval .*greater than maximum value 10"):
        client.predict(**{**one, "deep_cache": 11}, api_name="/txt2img")


def test_random_seed_is_returned(app):
    _, client = app
    _, infotext, seed = client.predict(**{**ARGS, "seed": -1, "batch_size": 1}, api_name="/txt2img")
    assert seed >= 0 and f"Seed: {seed}" in infotext


def test_img2img_and_inpaint_endpoints(app, tmp_path, test_image):
    from gradio_client import handle_file

    engine, client = app
    src = tmp_path / "in.png"
    test_image.save(src)
    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (40, 8, 72, 40))
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    common = {**ARGS, "batch_size": 1, "width": 0, "height": 0}
    gallery, infotext, _ = client.predict(
        **common, image=handle_file(str(src)), strength=0.5, resize_mode="Just resize", api_name="/img2img"
    )
    assert "Denoising strength: 0.5" in infotext and "Size: 96x64" in infotext
    with Image.open(gallery[0]["image"]) as img:
        assert img.size == (96, 64)
    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    inpaint_args = dict(strength=1.0, mask_blur=2, inpaint_area="Whole picture", padding=32, api_name="/inpaint")
    gallery, infotext, _, mask_used = client.predict(
        **common, image=editor, mask=handle_file(str(mask_path)), **inpaint_args
    )
    assert "Mask blur: 2" in infotext
    with Image.open(gallery[0]["image"]) as out, Image.open(mask_used) as used:
        got, want = np.asarray(out.convert("RGB")), np.asarray(test_image)
        assert np.array_equal(got[:, :30], want[:, :30])  # far left of the mask: untouched
        assert not np.array_equal(got[8:40, 40:72], want[8:40, 40:72])
        # "Mask used" is the mask tinted over the result: tinted inside the mask, the result's own pixels outside.
        shown = np.asarray(used.convert("RGB"))
        assert not np.array_equal(shown[20, 50], got[20, 50]) and np.array_equal(shown[60, 5], got[60, 5])
    with pytest.raises(AppError, match="paint the area to repaint"):
        client.predict(**common, image=editor, mask=None, **inpaint_args)


def test_outpaint_through_the_inpaint_endpoint(app, tmp_path, test_image):
    from gradio_client import handle_file

    engine, client = app
    src = tmp_path / "in.png"
    test_image.save(src)
    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    args = {**ARGS, "batch_size": 1, "width": 0, "height": 0, "image": editor, "mask": None, "strength": 1.0}
    # No painted mask needed: the new strip on the left is what gets generated.
    gallery, _, _, mask_used = client.predict(**args, outpaint_left=24, api_name="/inpaint")
    with Image.open(gallery[0]["image"]) as out, Image.open(mask_used) as used:
        assert out.size == (120, 64)
        assert np.array_equal(np.asarray(out.convert("RGB"))[:, 24:], np.asarray(test_image))
        shown, result = np.asarray(used.convert("RGB")), np.asarray(out.convert("RGB"))
        assert not np.array_equal(shown[30, 10], result[30, 10]) and np.array_equal(shown[30, 60], result[30, 60])
    with pytest.raises(AppError, match="outpaint_down: outpainting makes the height"):
        client.predict(**args, outpaint_down=2040, api_name="/inpaint")
    assert client.predict(**args, outpaint_up=8, api_name="/inpaint")  # the server keeps serving


def test_png_info_endpoint(app, tmp_path):
    from gradio_client import handle_file

    _, client = app
    gallery, infotext, seed = client.predict(**{**ARGS, "batch_size": 1}, api_name="/txt2img")
    raw, parsed = client.predict(image=handle_file(gallery[0]["image"]), api_name="/png_info")
    assert raw == infotext
    assert parsed["seed"] == seed and parsed["sampler"] == "Euler a" and parsed["width"] == 64
    assert parsed["prompt"] == "a red circle" and parsed["negative_prompt"] == "blurry"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(AppError, match="has no generation parameters"):
        client.predict(image=handle_file(str(plain)), api_name="/png_info")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict(image=handle_file(str(corrupt)), api_name="/png_info")


def test_styles_through_the_api(app):
    _, client = app
    _, infotext, _ = client.predict(
        **{**ARGS, "batch_size": 1, "styles": ["Photographic", "Quality boost"]}, api_name="/txt2img"
    )
    assert infotext.startswith("cinematic photo of a red circle, 35mm photograph")
    assert "best quality" in infotext.split("\n")[0]
    with pytest.raises(AppError, match="No such style.*not in the list of choices"):
        client.predict(**{**ARGS, "styles": ["No such style"]}, api_name="/txt2img")


def test_controlnet_endpoint_returns_the_map_and_the_images(app, tmp_path):
    from gradio_client import handle_file

    from backend.schema.requests import ControlNetRequest, ControlUnit

    engine, client = app
    reference = Image.new("RGB", (96, 64), "black")
    reference.paste((255, 255, 255), (24, 16, 72, 48))
    src = tmp_path / "reference.png"
    reference.save(src)
    params = [
        p["parameter_name"]
        for p in client.view_api(return_format="dict")["named_endpoints"]["/controlnet"]["parameters"]
    ]
    assert params[: len(ARGS)] == list(ARGS)
    assert params[len(ARGS) : len(ARGS) + 6] == [
        "image",
        "control_type",
        "preprocessor",
        "conditioning_scale",
        "guidance_start",
        "guidance_end",
    ]
    assert {"init_image", "strength", "guess_mode", "image_2", "control_type_2", "guidance_end_2"} <= set(params)
    unit = dict(control_type="canny", conditioning_scale=0.8, guidance_start=0.0, guidance_end=0.75)
    common = {**ARGS, "batch_size": 1, "width": 0, "height": 0}
    gallery, infotext, seed, control_map, control_map_2 = client.predict(
        **common, image=handle_file(str(src)), **unit, api_name="/controlnet"
    )
    assert seed == 77 and control_map_2 is None
    assert 'ControlNet 0: "Module: canny, Model: canny, Weight: 0.8, Guidance Start: 0, Guidance End: 0.75' in infotext
    direct = engine.run(ControlNetRequest(**{**common, "styles": ()}, units=(ControlUnit(image=reference, **unit),)))
    with Image.open(gallery[0]["image"]) as img, Image.open(control_map) as used:
        assert img.size == (96, 64)
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(direct.images[0].convert("RGB")))
        # The map is the canny outline of the white block: edges on its border, nothing inside it.
        edges = np.asarray(used.convert("L"))
        assert np.array_equal(edges, np.asarray(direct.extras["control_maps"][0].convert("L")))
        assert edges[32, 20:28].max() > 100 and edges[32, 8:20].max() == 0 and edges[32, 30:66].max() == 0
    # The preview endpoint gives the same map without generating.
    preview = client.predict(image=handle_file(str(src)), **unit, width=0, height=0, api_name="/controlnet_map")
    with Image.open(preview) as shown:
        assert np.array_equal(np.asarray(shown.convert("L")), edges)
    # A second unit through the API: no picture of its own (the first one's), its map returned too.
    unit_2 = dict(control_type_2="depth", preprocessor_2="none", conditioning_scale_2=0.5)
    _, infotext, _, _, control_map_2 = client.predict(
        **common, image=handle_file(str(src)), **unit, **unit_2, api_name="/controlnet"
    )
    assert 'ControlNet 1: "Module: none, Model: depth, Weight: 0.5' in infotext
    with Image.open(control_map_2) as second:
        assert np.array_equal(np.asarray(second.convert("RGB")), np.asarray(reference))
    with pytest.raises(AppError, match="guidance start .* must be below guidance end"):
        client.predict(
            **common, image=handle_file(str(src)), guidance_start=0.9, guidance_end=0.5, api_name="/controlnet"
        )
    with pytest.raises(AppError, match="upload a reference picture"):
        client.predict(**common, image=None, api_name="/controlnet")


def test_every_field_but_the_pictures_has_the_uis_default(app):
    engine, client = app
    endpoints = client.view_api(return_format="dict")["named_endpoints"]
    for name, endpoint in endpoints.items():
        required = [p["parameter_name"] for p in endpoint["parameters"] if not p["parameter_has_default"]]
        assert set(required) <= {"image", "mask"}, f"{name} requires {required}"
    gallery, infotext, seed = client.predict(prompt="a red circle on a blue background", api_name="/txt2img")
    assert len(gallery) == 1 and f"Seed: {seed}" in infotext
    assert f"Model: {engine.default_model}" in infotext


def test_hires_fix_through_the_api(app):
    _, client = app
    args = {**ARGS, "batch_size": 1, "enable_hr": True, "hr_scale": 1.5, "hr_steps": 2, "strength": 0.6}
    gallery, infotext, _ = client.predict(**args, api_name="/txt2img")
    with Image.open(gallery[0]["image"]) as img:
        assert img.size == (96, 96)
    params = parse_infotext(infotext).params
    assert params["Hires upscale"] == "1.5" and params["Size"] == "64x64" and params["Hires upscaler"] == "Lanczos"
    with pytest.raises(AppError, match="hr_scale: hires fix makes the width 2304, above the limit 2048"):
        client.predict(**{**args, "width": 768, "hr_scale": 3.0}, api_name="/txt2img")  # refused before it runs


def test_upscale_endpoint(app, tmp_path):
    from gradio_client import handle_file

    _, client = app
    path = tmp_path / "in.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    out = client.predict(handle_file(str(path)), "Lanczos", 2.0, api_name="/upscale")
    with Image.open(out) as img:
        assert img.size == (64, 48)
    with pytest.raises(AppError, match="greater than maximum value 8"):
        client.predict(handle_file(str(path)), "Lanczos", 20.0, api_name="/upscale")
    with pytest.raises(AppError, match="unknown upscaler"):
        client.predict(handle_file(str(path)), "nope", 2.0, api_name="/upscale")
    # The server keeps serving after the refusals.
    assert client.predict(handle_file(str(path)), "Lanczos", 1.0, api_name="/upscale")


def test_a1111_prompt_syntax_through_the_api(app):
    engine, client = app
    args = {**ARGS, "batch_size": 1, "prompt": "a (red:1.6) circle, (unbalanced BREAK blue"}
    gallery, infotext, _ = client.predict(**args, api_name="/txt2img")
    assert infotext.startswith(args["prompt"])
    direct = engine.run(Txt2ImgRequest(**args)).images[0]
    plain = engine.run(Txt2ImgRequest(**{**args, "prompt": "a red circle, unbalanced blue"})).images[0]
    with Image.open(gallery[0]["image"]) as img:
        got = np.asarray(img.convert("RGB"))
    assert np.array_equal(got, np.asarray(direct.convert("RGB")))
    assert not np.array_equal(got, np.asarray(plain.convert("RGB")))
