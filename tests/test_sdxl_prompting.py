"""A1111 prompt syntax on SDXL: weights, BREAK, long prompts, in both prompt boxes, every SDXL pipeline and the grid.

The model is the tiny SDXL-structured pipeline of ``ldm_layout``, saved as a single-file checkpoint and loaded the
way the app loads any SDXL checkpoint (as in ``test_checkpoints``), with an SDXL ControlNet made from its UNet.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from PIL import Image

from backend.generation import pipeline_call as call_module
from backend.generation.engine import Engine
from backend.generation.prompting import prompt_embeddings
from backend.grid.runner import GridRequest, GridRunner
from backend.schema.requests import ControlNetRequest, ControlUnit, Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from backend.settings import Settings

from .conftest import TINY, pixels
from .ldm_layout import build_sdxl, save_config_folder, save_ldm_checkpoint

SDXL = "tiny-sdxl-syntax"
LONG = " ".join(["blue square"] * 60)  # 120 tokens


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    root = tmp_path_factory.mktemp("sdxl-syntax")
    checkpoints, configs = root / "Stable-diffusion", root / "configs"
    sdxl = build_sdxl(seed=5)
    save_ldm_checkpoint(sdxl, checkpoints / f"{SDXL}.safetensors")
    save_config_folder(sdxl, configs / "sdxl")
    ControlNetModel.from_unet(sdxl.unet, conditioning_embedding_out_channels=(16, 32)).save_pretrained(
        root / "controlnet-sdxl"
    )
    data = json.loads(Settings().models_file.read_text())
    data["models"] = [m for m in data["models"] if m["name"] == TINY]
    data["families"]["sdxl"]["controlnets"] = {"canny": str(root / "controlnet-sdxl")}
    models_file = root / "models.json"
    models_file.write_text(json.dumps(data))
    settings = Settings(
        offline=True,
        default_model=TINY,
        models_file=models_file,
        cache_dir=cache_dir,
        output_dir=tmp_path_factory.mktemp("sdxl-syntax-out"),
        save_outputs=False,
        checkpoints_dir=str(checkpoints),
        checkpoint_configs=configs,
    )
    return Engine(settings)


@pytest.fixture(scope="module")
def request_() -> Txt2ImgRequest:
    return Txt2ImgRequest(
        prompt="a red circle",
        seed=99,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=SDXL,
    )


@pytest.fixture(scope="module")
def run(engine, request_):
    return lambda **change: engine.run(request_.replace(**change)).images[0]


@pytest.fixture
def encoded(monkeypatch):
    """What ``prompt_embeddings`` returned on each engine run (None: the pipeline's own encoding was used)."""
    calls = []
    original = call_module.prompt_embeddings

    def spy(pipe, prompt, negative):
        result = original(pipe, prompt, negative)
        calls.append(result)
        return result

    monkeypatch.setattr(call_module, "prompt_embeddings", spy)
    return calls


def test_plain_prompt_keeps_the_pipelines_own_encoding(run, engine, encoded):
    plain = run()
    with_negative = run(negative_prompt="blurry")
    assert encoded == [None, None]  # plain text within one chunk: the pipeline encodes it, as before
    assert engine.registry.get(SDXL).family == "sdxl"
    # The syntax path with weight 1 is that same encoding (both encoders, pooled, the zeroed empty negative, the
    # encoded negative): same pixels, so adding syntax changes only what the syntax says.
    assert same(run(prompt="a (red:1) circle"), plain)
    assert same(run(prompt="a (red:1) circle", negative_prompt="blurry"), with_negative)
    assert same(run(negative_prompt="(blurry:1)"), with_negative)
    assert [sorted(e) for e in encoded[2:]] == [
        ["negative_pooled_prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "prompt_embeds"]
    ] * 3
    assert not same(plain, with_negative)


def test_pooled_embedding_is_the_first_chunks_without_weights(engine):
    # A1111's choice: SDXL's pooled embedding comes from the first chunk of the first BREAK piece, weights left out.
    with engine.run_lock:
        pipe = engine.cache.pipeline(SDXL, "txt2img")
        with torch.no_grad():

            def pooled(text: str) -> torch.Tensor:
                return pipe.encode_prompt(text, device=pipe.device, do_classifier_free_guidance=False)[2]

            for prompt, first in [
                ("a (red:1.6) circle", "a red circle"),
                ("a red circle BREAK blue square", "a red circle"),
                (LONG + " red", LONG),  # the pipeline's own encoding cuts LONG to its first chunk
            ]:
                got = prompt_embeddings(pipe, prompt, "blurry")
                assert torch.equal(got["pooled_prompt_embeds"], pooled(first)), prompt
                assert torch.equal(got["negative_pooled_prompt_embeds"], pooled("blurry")), prompt
                assert got["prompt_embeds"].shape == got["negative_prompt_embeds"].shape
                assert got["prompt_embeds"].shape[-1] == 32 + 48  # both encoders' widths


def test_weight_changes_the_image(run):
    plain = run()
    assert not same(run(prompt="a (red:1.6) circle"), plain)
    assert not same(run(prompt="a [red] circle"), plain)
    assert not same(run(prompt="a ((red)) circle"), run(prompt="a (red) circle"))


def test_unbalanced_bracket_is_literal(run):
    assert same(run(prompt="a (red circle"), run(prompt=r"a \(red circle"))
    assert not same(run(prompt=r"a \(red\) circle"), run(prompt="a (red) circle"))  # escaped: not a weight


def test_words_after_token_77_change_the_image(run):
    assert not same(run(prompt=LONG + " red"), run(prompt=LONG + " green"))
    assert not same(run(prompt=LONG + " red"), run(prompt=LONG))


def test_break_changes_the_image(run):
    assert not same(run(prompt="a red circle, blue square"), run(prompt="a red circle BREAK blue square"))
    # The pooled embedding is the first chunk's: only the cross-attention sees the second piece, and it does.
    assert not same(run(prompt="a red circle BREAK blue square"), run(prompt="a red circle BREAK green square"))


def test_negative_prompt_weights_and_length(run):
    blurry = run(negative_prompt="blurry")
    assert not same(run(negative_prompt="(blurry:1.5)"), blurry)
    assert not same(run(negative_prompt=LONG + " red"), run(negative_prompt=LONG + " green"))
    # A long positive prompt with a short negative one: the negative is padded to the prompt's chunks.
    assert not same(run(prompt=LONG, negative_prompt="(blurry:1.3)"), run(prompt=LONG, negative_prompt="blurry"))


def test_clip_skip_is_ignored_on_sdxl_as_in_a1111(run):
    # A1111 ignores clip skip on SDXL by default: a pasted PNG's "Clip skip: 2" draws what clip skip 1 draws.
    assert same(run(clip_skip=2), run())
    assert same(run(prompt="a (red:1) circle", clip_skip=2), run())


def test_img2img_inpaint_and_controlnet_take_the_syntax(engine, request_, test_image):
    fields = {k: getattr(request_, k) for k in ("seed", "steps", "guidance_scale", "sampler", "schedule", "model")}
    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    requests = [
        Img2ImgRequest(**fields, image=test_image, strength=0.8),
        InpaintRequest(**fields, image=test_image, mask=mask, mask_blur=0, strength=1.0),
        ControlNetRequest(**fields, width=64, height=64, units=(ControlUnit(image=test_image),)),
    ]
    for request in requests:
        plain = engine.run(request.replace(prompt="a red circle")).images[0]
        assert same(engine.run(request.replace(prompt="a (red:1) circle")).images[0], plain), request.task
        weighted = engine.run(request.replace(prompt="a (red:1.6) circle", negative_prompt="[blurry]")).images[0]
        assert not same(weighted, plain), request.task


def test_sampler_grid_takes_the_syntax_on_sdxl(engine):
    request = GridRequest(
        prompt="a (red:1.6) circle BREAK " + LONG,
        negative_prompt="(blurry:1.2)",
        seed=1234,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        model=SDXL,
        samplers=["Euler", "DDIM"],
        steps_list=[2],
    )
    grid = GridRunner(engine).run(request)
    assert len(grid.images) == 2
    single = engine.run(grid.plan.cells[0]).images[0]
    assert same(grid.images[0], single)  # encoded once for the grid: the same as a run of its own
    plain = engine.run(grid.plan.cells[0].replace(prompt="a red circle blue square", negative_prompt="")).images[0]
    assert not same(grid.images[0], plain)
    # CFG 1 in every cell: the negative embeddings (SDXL's pooled one too) are left out.
    unguided = GridRunner(engine).run(dataclasses.replace(request, guidance_scale=1.0))
    assert same(unguided.images[0], engine.run(unguided.plan.cells[0]).images[0])
