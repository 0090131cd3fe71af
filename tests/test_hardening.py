"""A demo shared with strangers: each finding of the hardening review reproduced through the API, then fixed."""

from __future__ import annotations

import re
import zlib

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY, endpoint_args

pytestmark = pytest.mark.api

ARGS = endpoint_args(seed=3)


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    settings = Settings(
        offline=True, output_dir=tmp_path_factory.mktemp("hardening-out"), cache_dir=cache_dir, max_upload_mb=1
    )
    engine = Engine(settings)
    with serve(engine) as url:
        yield engine, Client(url, verbose=False), url


def _still_serving(client: Client) -> None:
    _, _, seed = client.predict(**ARGS, api_name="/txt2img")
    assert seed == ARGS["seed"]


def test_saved_outputs_are_not_served_and_results_keep_their_parameters(app):
    engine, client, url = app
    gallery, infotext, _ = client.predict(**ARGS, api_name="/txt2img")
    saved = sorted(engine.settings.output_dir.rglob("*.png"))
    assert saved, "the server owner still gets the saved copy"
    # The file a user downloads is the session's cached copy, with its parameters; never the output folder's.
    with Image.open(gallery[0]["image"]) as img:
        assert parse_infotext(read_infotext(img)).params["Seed"] == str(ARGS["seed"])
    assert str(engine.settings.output_dir) not in str(gallery[0].get("url") or "")
    for path in saved:
        response = httpx.get(f"{url}gradio_api/file={path.resolve()}")
        assert response.status_code in (403, 404), f"{path.name} is readable by anyone: {response.status_code}"


def _png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width``×``height`` with a tiny (wrong-size) body: decoding must never start."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


UNIT = dict(control_type="canny", preprocessor="canny", conditioning_scale=1.0, guidance_start=0.0, guidance_end=1.0)


def _control_map(client: Client, path) -> str:
    return client.predict(image=handle_file(str(path)), **UNIT, width=0, height=0, api_name="/controlnet_map")


def test_a_declared_huge_picture_is_refused_before_decoding(app, tmp_path):
    _, client, _ = app
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(30000, 30000))
    with pytest.raises(AppError, match="16777216|4096"):
        _control_map(client, bomb)
    _still_serving(client)


def test_uploads_over_the_size_limit_are_refused(app, tmp_path):
    _, client, _ = app
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 1_000_000
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        _control_map(client, big)
    _still_serving(client)


def test_non_pictures_and_truncated_pictures_get_a_message_naming_the_field(app, tmp_path, test_image):
    _, client, _ = app
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    with pytest.raises(AppError, match="Reference picture: this file is not a picture"):
        _control_map(client, text)
    whole = tmp_path / "whole.png"
    test_image.save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AppError, match="Reference picture: this picture could not be decoded"):
        _control_map(client, cut)
    _still_serving(client)


def _png_with_chunks(*chunks: tuple[bytes, bytes], size: int = 8) -> bytes:
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    pixels = zlib.compress(b"".join(b"\0" + b"\0" * 3 * size for _ in range(size)))
    extra = b"".join(chunk(kind, data) for kind, data in chunks)
    return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_png_info_survives_crafted_files(app, tmp_path):
    _, client, _ = app
    bomb = tmp_path / "ztxt-bomb.png"  # a zTXt chunk inflating to 50 MB
    bomb.write_bytes(_png_with_chunks((b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * 50_000_000, 9))))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(AppError, match="not a readable image"):
        client.predict(image=handle_file(str(bomb)), api_name="/png_info")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(30000, 30000))
    with pytest.raises(AppError, match="absurd size|no generation parameters"):
        client.predict(image=handle_file(str(huge)), api_name="/png_info")
    absurd = tmp_path / "absurd-seed.png"
    text = b"a cat\nSteps: 20, Sampler: Euler, Seed: -99999999999999999999, CFG scale: nan"
    absurd.write_bytes(_png_with_chunks((b"tEXt", b"parameters\0" + text)))
    raw, parsed = client.predict(image=handle_file(str(absurd)), api_name="/png_info")
    assert raw == text.decode() and parsed["seed"] is None and parsed["steps"] == 20
    _still_serving(client)


def test_infotext_parsing_is_linear():
    import time

    from backend.library.infotext import parse_infotext

    line = "Steps 20 " * 25_000  # 225k characters, no colon: quadratic parsing took minutes on this
    start = time.perf_counter()
    parse_infotext("a cat\n" + line)
    assert time.perf_counter() - start < 5


def test_a_prompt_cannot_forge_its_own_negative_prompt(app):
    from backend.schema.errors import ValidationError
    from backend.schema.requests import Txt2ImgRequest
    from backend.schema.validate import validate

    _, client, _ = app
    with pytest.raises(AppError, match="prompt has a line starting with 'Negative prompt:'"):
        client.predict(**{**ARGS, "prompt": "a cat\nNegative prompt: dogs"}, api_name="/txt2img")
    with pytest.raises(ValidationError, match="negative_prompt has a line"):
        validate(Txt2ImgRequest(negative_prompt="blurry\nNegative prompt: x"), Settings())
    # A multi-line prompt and a negative prompt that starts with the words round-trip exactly.
    prompt, negative = "a cat\non a mat", "Negative prompt: is fine on its first line"
    _, infotext, _ = client.predict(**{**ARGS, "prompt": prompt, "negative_prompt": negative}, api_name="/txt2img")
    info = parse_infotext(infotext)
    assert (info.prompt, info.negative_prompt) == (prompt, negative)


def test_a_full_disk_loses_no_picture(app, monkeypatch):
    import errno

    engine, client, _ = app
    real_save = engine.writer.save
    calls = []

    def fill_up(image, text, seed):
        calls.append(seed)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(image, text, seed)

    monkeypatch.setattr(engine.writer, "save", fill_up)
    gallery, _, seed = client.predict(**{**ARGS, "batch_size": 4, "seed": 40}, api_name="/txt2img")
    assert seed == 40 and len(gallery) == 4, "every picture made is returned"
    result = engine.run(Txt2ImgRequest(**{**ARGS, "batch_size": 3, "seed": 50, "styles": ()}))
    assert len(result.images) == 3 and len(result.paths) == 0
    assert result.warnings == [
        "3 of 3 pictures (seeds 50, 51, 52) could not be saved in the output folder: No space left on device. "
        "They are shown here: download the ones you want to keep."
    ]


def test_stale_temporary_files_are_removed_at_start(tmp_path, cache_dir):
    import os
    import time

    from backend.library.outputs import OutputWriter

    day = tmp_path / "out" / "2026-01-01"
    day.mkdir(parents=True)
    stale, fresh, other = day / ".abc.png.tmp", day / ".def.png.tmp", day / "notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    OutputWriter(tmp_path / "out")
    assert not stale.exists(), "a killed run's temporary file is removed"
    assert fresh.exists(), "a write that may be in progress is left alone"
    assert other.exists(), "files that are not ours are left alone"


BAD_TXT2IMG = [
    ({"steps": "abc"}, "Steps: 'abc' is not a valid value"),
    ({"width": "512"}, "Width: '512' is not a valid value"),
    ({"seed": None}, "seed: seed must be a whole number"),
    ({"seed": 2**40}, "seed: seed must be between -1 and 4294967295"),
    ({"steps": -5}, "Steps: Value -5 is less than minimum value 1"),
    ({"steps": 10_000}, "Steps: Value 10000 is greater than maximum"),
    ({"guidance_scale": -1}, "CFG scale: Value -1"),
    ({"width": 100}, "width 100 is not a multiple of 8"),
    ({"height": 4096}, "Height: Value 4096 is greater than maximum"),
    ({"batch_size": 0}, "Batch size: Value 0 is less than minimum"),
    ({"sampler": "Bogus"}, "Sampler: Value: Bogus is not in the list of choices"),
    ({"schedule": "Sideways"}, "Schedule type: Value: Sideways is not in the list of choices"),
    # The model and VAE menus take any text (a checkpoint found by Refresh after the app started); the engine
    # checks the name against its current list.
    ({"model": "../../etc/passwd"}, "model: unknown model '../../etc/passwd'; choose one of:"),
    ({"vae": "../../etc/passwd"}, "vae: unknown VAE '../../etc/passwd'; choose the model's own"),
    ({"styles": ["nope"]}, "Styles: Value: 'nope'"),
    ({"prompt": "x" * 20_000}, "prompt is 20000 characters long; the limit is 4000"),
    ({"prompt": "a cat\x00"}, "prompt contains a NUL character"),
]


@pytest.mark.parametrize("fields, message", BAD_TXT2IMG, ids=[str(list(f)) for f, _ in BAD_TXT2IMG])
def test_bad_txt2img_input_names_the_field(app, fields, message):
    _, client, _ = app
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(**{**ARGS, **fields}, api_name="/txt2img")


def test_emoji_prompts_work_and_the_server_serves_after_bad_input(app):
    _, client, _ = app
    _, infotext, _ = client.predict(**{**ARGS, "prompt": "a red circle 🎈 ☕"}, api_name="/txt2img")
    assert infotext.startswith("a red circle 🎈 ☕\n")
    _still_serving(client)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Pictures good and bad, by name, for the cases below."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    ok = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    ok.save(folder / "ok.png")
    ok.convert("CMYK").save(folder / "cmyk.jpg")
    ok.convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (64, 64)).astype(np.uint16)).save(folder / "16bit.png")
    Image.new("RGB", (1, 1), "red").save(folder / "one.png")
    Image.new("L", (48, 48), 255).save(folder / "mask48.png")
    (folder / "text.png").write_text("hello")
    (folder / "cut.png").write_bytes((folder / "ok.png").read_bytes()[:300])
    return folder


def _files(fields: dict, folder) -> dict:
    """``"@name"`` → that picture as an upload; ``"@editor:name"`` → the inpaint editor's value with it."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, str) and value.startswith("@editor:"):
            value = {"background": handle_file(str(folder / value[8:])), "layers": [], "composite": None}
        elif isinstance(value, str) and value.startswith("@"):
            value = handle_file(str(folder / value[1:]))
        out[key] = value
    return out


SMALL = dict(prompt="a red circle", seed=3, steps=2, width=64, height=64, model=TINY)
EDIT = {**SMALL, "image": "@editor:ok.png", "mask": "@ok.png"}
CONTROL = {**SMALL, "image": "@ok.png"}
BAD_ELSEWHERE = [
    # img2img
    ("/img2img", {**SMALL, "image": None}, "image: upload an image to start from"),
    ("/img2img", {**SMALL, "image": "@text.png"}, "this file is not a picture"),
    ("/img2img", {**SMALL, "image": "@cut.png"}, "this picture could not be decoded"),
    ("/img2img", {**SMALL, "image": "@ok.png", "strength": 2}, "Denoising strength: Value 2"),
    ("/img2img", {**SMALL, "image": "@ok.png", "strength": "lots"}, "Denoising strength: 'lots' is not a valid value"),
    ("/img2img", {**SMALL, "image": "@ok.png", "resize_mode": "Stretch"}, "Resize mode: Value: 'Stretch'"),
    ("/img2img", {**SMALL, "image": "@ok.png", "width": 100}, "width 100 is not a multiple of 8"),
    ("/img2img", {**SMALL, "image": "@ok.png", "steps": 0}, "Steps: Value 0 is less than minimum"),
    ("/img2img", {**SMALL, "image": "@ok.png", "model": "/etc/passwd"}, "model: unknown model '/etc/passwd'"),
    ("/img2img", {**SMALL, "image": "@ok.png", "prompt": "a\x00b"}, "prompt contains a NUL character"),
    # inpaint
    ("/inpaint", {**SMALL, "image": "@editor:ok.png", "mask": None}, "mask: paint the area to repaint"),
    ("/inpaint", {**EDIT, "mask": "@text.png"}, "this file is not a picture"),
    ("/inpaint", {**EDIT, "mask": "@cut.png"}, "this picture could not be decoded"),
    ("/inpaint", {**EDIT, "image": "@editor:text.png"}, "this file is not a picture"),
    ("/inpaint", {**EDIT, "mask_blur": -3}, "Mask blur: Value -3 is less than minimum"),
    ("/inpaint", {**EDIT, "padding": 10**6}, "Only masked padding"),
    ("/inpaint", {**EDIT, "inpaint_area": "Elsewhere"}, "Inpaint area: Value: 'Elsewhere'"),
    ("/inpaint", {**EDIT, "strength": -0.5}, "Denoising strength: Value -0.5"),
    ("/inpaint", {**EDIT, "batch_size": 99}, "Batch size: Value 99 is greater than maximum"),
    ("/inpaint", {**EDIT, "negative_prompt": "n" * 20_000}, "negative_prompt is 20000 characters long"),
    # ControlNet
    ("/controlnet", {**SMALL, "image": None}, "image: upload a reference picture for the ControlNet"),
    ("/controlnet", {**CONTROL, "image": "@text.png"}, "this file is not a picture"),
    ("/controlnet", {**CONTROL, "control_type": "scribble"}, "Control type: Value: scribble is not in"),
    ("/controlnet", {**CONTROL, "preprocessor": "magic"}, "Preprocessor: Value: 'magic'"),
    ("/controlnet", {**CONTROL, "conditioning_scale": 99}, "Control weight (conditioning scale): Value 99"),
    ("/controlnet", {**CONTROL, "guidance_start": 2}, "Guidance start: Value 2"),
    ("/controlnet", {**CONTROL, "guidance_start": 0.8, "guidance_end": 0.2}, "must be below guidance end (0.2)"),
    ("/controlnet", {**CONTROL, "low_threshold": 250, "high_threshold": 10}, "threshold"),
    ("/controlnet", {**CONTROL, "resize_mode": "Squash"}, "Resize mode: Value: 'Squash'"),
    ("/controlnet", {**CONTROL, "width": 12}, "width: width must be between 64 and 2048, got 12"),
    ("/controlnet_map", {"image": None}, "image"),
    ("/controlnet_map", {"image": "@cut.png"}, "this picture could not be decoded"),
    ("/controlnet_map", {"image": "@ok.png", "detect_resolution": -1}, "Detect resolution (0 = the output size)"),
    ("/controlnet_map", {"image": "@ok.png", "control_type": "x"}, "Control type: Value: x is not in"),
    # The sampler grid
    ("/sampler_grid", {**SMALL, "samplers": []}, "samplers: pick at least one sampler"),
    ("/sampler_grid", {**SMALL, "samplers": ["Nope"]}, "samplers: unknown sampler 'Nope'"),
    ("/sampler_grid", {**SMALL, "samplers": "Euler", "steps_list": "1, x"}, "steps must be a whole number, got 'x'"),
    ("/sampler_grid", {**SMALL, "samplers": ["Euler"], "steps_list": "", "cfg_list": "inf"}, "cfg"),
    ("/sampler_grid", {**SMALL, "samplers": ["Euler"], "steps_list": "1, 9999"}, "steps"),
    ("/sampler_grid", {**SMALL, "width": "wide"}, "Width: 'wide' is not a valid value"),
    # PNG info
    ("/png_info", {"image": "@text.png"}, "This file is not a readable image"),
    ("/png_info", {"image": "@cut.png"}, "This file is not a readable image"),
    # txt2img, beyond the cases above
    ("/txt2img", {**SMALL, "negative_prompt": "ok\nNegative prompt: forged"}, "Negative prompt"),
    ("/txt2img", {**SMALL, "steps": 2.5}, "steps must be a whole number, got 2.5"),
    ("/txt2img", {**SMALL, "batch_size": 99}, "Batch size: Value 99 is greater than maximum"),
    ("/txt2img", {**SMALL, "model": "C:\\models\\x.safetensors"}, "model: unknown model"),
    ("/txt2img", {**SMALL, "width": 2048, "height": 2048, "steps": 150}, "pixel"),
]


@pytest.mark.parametrize(
    "endpoint, fields, message", BAD_ELSEWHERE, ids=[f"{e} {list(f)[-1]}" for e, f, _ in BAD_ELSEWHERE]
)
def test_bad_input_on_every_endpoint_names_the_field(app, pictures, endpoint, fields, message):
    _, client, _ = app
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(**_files(fields, pictures), api_name=endpoint)


@pytest.mark.parametrize("name", ["cmyk.jpg", "palette.png", "16bit.png", "one.png"])
def test_unusual_pictures_are_converted_not_refused(app, pictures, name):
    """CMYK, palette, 16-bit and 1×1 pictures are pictures: they are converted to RGB and used (the size follows the
    output size), not refused."""
    _, client, _ = app
    gallery, infotext, _ = client.predict(**_files({**CONTROL, "image": f"@{name}"}, pictures), api_name="/img2img")
    assert len(gallery) == 1 and "Size: 64x64" in infotext


def test_not_a_number_is_refused_naming_the_field(app):
    """NaN and infinity (which JSON clients cannot even send, but raw HTTP can) are refused by name."""
    _, client, url = app
    import json

    parameters = client.view_api(return_format="dict")["named_endpoints"]["/txt2img"]["parameters"]
    fields = {**ARGS, "guidance_scale": float("nan")}
    data = [fields.get(p["parameter_name"], p["parameter_default"]) for p in parameters]
    body = json.dumps({"data": data})  # Python writes NaN, as a careless client would
    assert "NaN" in body
    answer = httpx.post(f"{url}gradio_api/call/txt2img", content=body, headers={"content-type": "application/json"})
    event = answer.json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/txt2img/{event}", timeout=60).text
    assert "error" in stream and "guidance_scale" in stream.lower().replace("cfg scale", "guidance_scale"), stream
    _still_serving(client)
