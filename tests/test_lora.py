"""LoRA tags and textual-inversion embeddings on the tiny offline model.

The LoRAs are made here with peft on the tiny model's own UNet and text encoder and saved with Kohya's key names
(``lora_unet_…``/``lora_te_…``, ``lora_down``/``lora_up``/``alpha``), the format A1111 and Civitai files use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.generation.networks import insert_tag, parse_lora_tags, strip_tags
from backend.grid.runner import GridRequest, GridRunner
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, Txt2ImgRequest
from backend.settings import Settings

from .conftest import TINY, pixels
from .test_browser import browser, set_number  # noqa: F401 (the browser fixture)

PROMPT = "a red circle on a blue background"


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def make_kohya_lora(tiny_dir: Path, path: Path, seed: int, text_encoder: bool = True) -> None:
    """A random rank-4 LoRA for the tiny model's attention layers, saved in Kohya's format."""
    from diffusers import UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    if text_encoder:
        encoder = CLIPTextModel.from_pretrained(tiny_dir, subfolder="text_encoder")
        encoder.add_adapter(
            LoraConfig(
                r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], init_lora_weights=False
            )
        )
        # Kohya names the text encoder's modules as the original CLIP does (text_model.encoder.layers…).
        state.update({f"text_encoder.text_model.{k}": v for k, v in get_peft_model_state_dict(encoder).items()})
    kohya = convert_state_dict_to_kohya(state)
    kohya = {key.replace("lora_te1_", "lora_te_"): value.contiguous() for key, value in kohya.items()}  # SD 1.x
    assert any(k.startswith("lora_unet_down_blocks_0_") and k.endswith(".lora_down.weight") for k in kohya)
    save_file(kohya, path)


def addnet_hash(path: Path) -> str:
    """Kohya's hash as written independently here: SHA-256 of what follows the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, cache_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("networks")
    loras, extra, embeddings = root / "loras", root / "more-loras", root / "embeddings"
    for folder in (loras, extra / "style", embeddings):
        folder.mkdir(parents=True)
    tiny_dir = cache_dir / "tiny"
    make_kohya_lora(tiny_dir, loras / "alpha.safetensors", seed=1)
    make_kohya_lora(tiny_dir, extra / "style" / "beta.safetensors", seed=2, text_encoder=False)  # a subfolder
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, loras / "notalora.safetensors")
    # Embeddings whose vectors are the token embeddings of real words: using one must equal writing the words.
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir, subfolder="tokenizer")
    table = CLIPTextModel.from_pretrained(tiny_dir, subfolder="text_encoder").get_input_embeddings().weight

    def vectors(words: str) -> torch.Tensor:
        ids = tokenizer(words, add_special_tokens=False).input_ids
        return table[ids].detach().clone()

    save_file({"emb_params": vectors("red")}, embeddings / "crimson.safetensors")  # A1111's key
    save_file({"emb_params": vectors("red circle")}, embeddings / "redcircle.safetensors")  # two vectors
    return {"loras": loras, "extra": extra, "embeddings": embeddings}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir, folders) -> Engine:
    import os

    settings = Settings(
        offline=True,
        output_dir=tmp_path_factory.mktemp("outputs"),
        cache_dir=cache_dir,
        save_outputs=False,
        lora_dirs=os.pathsep.join([str(folders["loras"]), str(folders["extra"])]),
        embedding_dirs=str(folders["embeddings"]),
    )
    return Engine(settings)


@pytest.fixture(scope="module")
def run(engine):
    request = Txt2ImgRequest(
        prompt=PROMPT,
        seed=1234,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
    )
    return lambda **change: engine.run(request.replace(**change))


@pytest.fixture(scope="module")
def base(run):
    return run().images[0]


WITH_ALPHA = f"{PROMPT} <lora:alpha:1>"


@pytest.fixture(scope="module")
def with_alpha(run):
    """The reference result with the LoRA alpha (several tests compare with it)."""
    return run(prompt=WITH_ALPHA)


def test_tags_are_parsed_out_of_the_prompt():
    text, tags = parse_lora_tags("a cat <lora:film grain:0.8>, <LORA:b>, <lora:c:0.5:1.5>")
    assert text == "a cat , , "
    assert [(t.name, t.text_encoder, t.unet) for t in tags] == [("film grain", 0.8, 0.8), ("b", 1, 1), ("c", 0.5, 1.5)]
    assert strip_tags("embedding:crimson <lora:x:1> dog") == "crimson  dog"
    with pytest.raises(ValidationError, match="weight must be a number"):
        parse_lora_tags("<lora:x:strong>")
    # The picker's insertion.
    assert insert_tag("", "lora", "alpha") == "<lora:alpha:1>"
    assert insert_tag("a cat ", "lora", "alpha") == "a cat, <lora:alpha:1>"
    assert insert_tag("a cat,", "embedding", "crimson") == "a cat, crimson"


def test_folders_are_scanned_with_subfolders(engine):
    assert set(engine.networks.loras) == {"alpha", "beta", "notalora"}
    assert set(engine.networks.embeddings) == {"crimson", "redcircle"}
    assert engine.token_label("red <lora:alpha:0.8>", TINY) == "1/75"  # a tag is not text the encoder sees


def test_lora_changes_the_image_and_leaving_it_out_restores_the_base(run, base, with_alpha, folders):
    with_lora = with_alpha
    assert not same(with_lora.images[0], base)
    half = run(prompt=f"{PROMPT} <lora:alpha:0.5>").images[0]
    assert not same(half, base) and not same(half, with_lora.images[0])  # the weight reaches the model
    assert same(run(prompt=f"{PROMPT} <lora:alpha:0>").images[0], base)  # weight 0: the base model's pixels
    assert same(run().images[0], base)  # dropped from the prompt: the base model's pixels
    # The tag stays in the prompt; the hash is A1111's (Kohya's hash of the tensor data, 12 hex digits).
    info = parse_infotext(with_lora.infotexts[0])
    assert info.prompt == f"{PROMPT} <lora:alpha:1>"
    assert info.params["Lora hashes"] == f"alpha: {addnet_hash(folders['loras'] / 'alpha.safetensors')}"
    assert 'Lora hashes: "alpha: ' in with_lora.infotexts[0]
    # PNG info → Send: the restored request carries the tag and gives the same picture.
    again = run(**{k: v for k, v in info.request_fields().items() if k in ("prompt", "seed", "steps")})
    assert same(again.images[0], with_lora.images[0])


def test_text_encoder_and_unet_weights_apply_separately(run, base):
    unet_only = run(prompt=f"{PROMPT} <lora:alpha:0:1>").images[0]
    text_only = run(prompt=f"{PROMPT} <lora:alpha:1:0>").images[0]
    assert not same(unet_only, base) and not same(text_only, base) and not same(unet_only, text_only)


def test_two_loras_with_their_own_weights(run, base, with_alpha):
    alpha = with_alpha.images[0]
    beta = run(prompt=f"{PROMPT} <lora:beta:1>").images[0]
    both = run(prompt=f"{PROMPT} <lora:alpha:1> <lora:beta:1>")
    assert not any(same(both.images[0], other) for other in (alpha, beta, base))
    assert same(run(prompt=f"{PROMPT} <lora:alpha:1> <lora:beta:0>").images[0], alpha)
    assert parse_infotext(both.infotexts[0]).params["Lora hashes"].count(": ") == 2


def test_missing_lora_names_the_folders_and_the_engine_keeps_serving(run, base, folders):
    with pytest.raises(ValidationError, match="no LoRA named 'ghost'") as caught:
        run(prompt=f"{PROMPT} <lora:ghost:1>")
    assert caught.value.field == "prompt"
    assert str(folders["loras"]) in str(caught.value) and str(folders["extra"]) in str(caught.value)
    assert same(run().images[0], base)


def test_a_file_that_is_not_a_lora_is_refused(run, base):
    with pytest.raises(ValidationError, match="notalora.safetensors .* is not a LoRA") as caught:
        run(prompt=f"{PROMPT} <lora:notalora:1>")
    assert caught.value.field == "prompt"
    assert same(run().images[0], base)


def test_a_lora_dropped_into_the_folder_is_found(run, base, folders):
    copy = folders["loras"] / "gamma.safetensors"
    copy.write_bytes((folders["loras"] / "alpha.safetensors").read_bytes())
    try:
        assert not same(run(prompt=f"{PROMPT} <lora:gamma:1>").images[0], base)
    finally:
        copy.unlink()


def test_embedding_by_file_name_is_its_vectors(run, folders):
    # crimson holds the vector of "red": the same picture as writing "red", and the file's hash in the infotext.
    red = run(prompt="a red circle").images[0]
    crimson = run(prompt="a crimson circle")
    assert same(crimson.images[0], red)
    assert not same(run(prompt="a circle").images[0], red)
    digest = hashlib.sha256((folders["embeddings"] / "crimson.safetensors").read_bytes()).hexdigest()[:12]
    assert parse_infotext(crimson.infotexts[0]).params["TI hashes"] == f"crimson: {digest}"
    # Several vectors, in the weighted (compel) path too, and in the negative prompt.
    assert same(run(prompt="a redcircle").images[0], red)
    assert same(run(prompt="a (big:1.2) redcircle").images[0], run(prompt="a (big:1.2) red circle").images[0])
    assert same(run(negative_prompt="embedding:crimson").images[0], run(negative_prompt="red").images[0])


def test_missing_embedding_names_its_folder(run, folders):
    with pytest.raises(ValidationError, match="no embedding named 'nothing'") as caught:
        run(prompt="a embedding:nothing circle")
    assert str(folders["embeddings"]) in str(caught.value)


def test_img2img_takes_the_lora_too(engine, test_image):
    request = Img2ImgRequest(prompt="a red circle", image=test_image, seed=7, steps=3, strength=0.6, model=TINY)
    plain = engine.run(request).images[0]
    assert not same(engine.run(request.replace(prompt="a red circle <lora:alpha:1>")).images[0], plain)


def test_grid_takes_the_tags(engine, with_alpha):
    grid = GridRequest(
        prompt=WITH_ALPHA,
        seed=1234,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        model=TINY,
        samplers=["Euler"],
        steps_list=[2],
        schedule="Automatic",
    )
    result = GridRunner(engine).run(grid)
    single = with_alpha
    assert int(np.abs(pixels(result.images[0]) - pixels(single.images[0])).max()) <= 1
    assert result.infotexts[0] == single.infotexts[0]
    assert "Lora hashes" in result.infotext


@pytest.fixture(scope="module")
def app_url(engine):
    from .apphost import serve

    with serve(engine, api=True) as url:
        yield url


@pytest.mark.api
def test_tags_through_the_api(app_url, with_alpha):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from PIL import Image

    client = Client(app_url, verbose=False)
    args = dict(
        prompt=WITH_ALPHA,
        seed=1234,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
    )
    gallery, infotext, _ = client.predict(**args, api_name="/txt2img")
    assert infotext == with_alpha.infotexts[0]
    with Image.open(gallery[0]["image"]) as got:
        assert same(got, with_alpha.images[0])
    with pytest.raises(AppError, match="no LoRA named 'ghost'"):
        client.predict(**{**args, "prompt": "<lora:ghost:1>"}, api_name="/txt2img")


@pytest.mark.api
def test_a1111_api_lists_them_and_txt2img_takes_the_tags(app_url, with_alpha):
    import requests

    sd = f"{app_url}sdapi/v1"
    listed = requests.get(f"{sd}/loras").json()
    assert {item["name"] for item in listed} == {"alpha", "beta", "notalora"}
    assert next(item for item in listed if item["name"] == "beta")["path"] == "style/beta.safetensors"
    loaded = requests.get(f"{sd}/embeddings").json()["loaded"]
    assert (loaded["crimson"]["vectors"], loaded["redcircle"]["vectors"]) == (1, 2)
    body = {
        "prompt": WITH_ALPHA,
        "seed": 1234,
        "steps": 2,
        "cfg_scale": 5.0,
        "width": 64,
        "height": 64,
        "sampler_name": "Euler",
        "override_settings": {"sd_model_checkpoint": TINY},
    }
    reply = requests.post(f"{sd}/txt2img", json=body)
    assert reply.status_code == 200, reply.text
    info = json.loads(reply.json()["info"])
    assert info["infotexts"][0] == with_alpha.infotexts[0]
    assert requests.post(f"{sd}/refresh-loras").status_code == 200


@pytest.mark.browser
def test_picker_inserts_the_tag_and_generate_uses_it(browser, app_url):  # noqa: F811 (the fixture)
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    page.locator("#txt2img-networks input").click()
    page.get_by_role("option", name="LoRA: alpha").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-prompt textarea').value === 'a red circle, <lora:alpha:1>'"
    )
    page.locator("#txt2img-model input").fill(TINY)
    page.keyboard.press("Enter")
    for elem_id, value in (
        ("txt2img-seed", "5"),
        ("txt2img-steps", "2"),
        ("txt2img-width", "64"),
        ("txt2img-height", "64"),
    ):
        set_number(page, elem_id, value)
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.includes('Lora hashes')", timeout=120_000
    )
    assert page.locator("#txt2img-infotext textarea").input_value().startswith("a red circle, <lora:alpha:1>\n")
    page.close()
