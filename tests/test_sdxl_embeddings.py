"""SDXL textual-inversion embeddings (the A1111/Civitai format: ``clip_l`` and ``clip_g`` vectors).

The SDXL model is the tiny SDXL-structured pipeline of ``ldm_layout``, saved as a single-file checkpoint and loaded
the way the app loads any SDXL checkpoint; the SD 1.x model is the built-in tiny one, in the same engine.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import TINY, pixels
from .ldm_layout import build_sdxl, save_config_folder, save_ldm_checkpoint

SDXL = "tiny-sdxl-ti"


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl-ti")
    checkpoints, configs, embeddings = root / "Stable-diffusion", root / "configs", root / "embeddings"
    embeddings.mkdir()
    sdxl = build_sdxl(seed=5)
    save_ldm_checkpoint(sdxl, checkpoints / f"{SDXL}.safetensors")
    save_config_folder(sdxl, configs / "sdxl")

    def rows(encoder, words: str) -> torch.Tensor:
        ids = sdxl.tokenizer(words, add_special_tokens=False).input_ids
        return encoder.get_input_embeddings().weight[ids].detach().clone()

    # crimsonxl: each encoder's own vectors of "red", so using it must draw exactly what "red" draws.
    crimson = {"clip_l": rows(sdxl.text_encoder, "red"), "clip_g": rows(sdxl.text_encoder_2, "red")}
    save_file(crimson, embeddings / "crimsonxl.safetensors")
    # zorblat: two random vectors of each encoder's width (32 and 48 in the tiny model).
    generator = torch.Generator().manual_seed(3)
    zorblat = {"clip_l": torch.randn(2, 32, generator=generator), "clip_g": torch.randn(2, 48, generator=generator)}
    save_file(zorblat, embeddings / "zorblat.safetensors")
    # An SD 1.x file (A1111's key, the tiny SD 1.x encoder's width) and an SDXL file with the wrong widths.
    save_file({"emb_params": torch.randn(1, 32, generator=generator)}, embeddings / "oldstyle.safetensors")
    save_file({"clip_l": torch.randn(1, 48), "clip_g": torch.randn(1, 32)}, embeddings / "swapped.safetensors")
    return {"root": root, "checkpoints": checkpoints, "configs": configs, "embeddings": embeddings}


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory, cache_dir) -> Engine:
    settings = Settings(
        offline=True,
        cache_dir=cache_dir,
        output_dir=tmp_path_factory.mktemp("sdxl-ti-out"),
        save_outputs=False,
        checkpoints_dir=os.pathsep.join([str(folders["checkpoints"])]),
        checkpoint_configs=folders["configs"],
        embedding_dirs=str(folders["embeddings"]),
    )
    return Engine(settings)


@pytest.fixture(scope="module")
def run(engine):
    request = Txt2ImgRequest(
        prompt="a circle",
        seed=99,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=SDXL,
    )
    return lambda **change: engine.run(request.replace(**change))


@pytest.fixture(scope="module")
def base(run):
    """The SDXL model's picture before any embedding is loaded into it."""
    return run().images[0]


def test_sdxl_embedding_changes_the_image_and_leaving_it_out_restores_the_base(base, run, engine, folders):
    assert engine.registry.get(SDXL).family == "sdxl"
    used = run(prompt="a zorblat circle")
    assert not same(used.images[0], base)
    pipe = engine.cache.pipeline(SDXL, "txt2img")
    # Two vectors in each encoder, under the file name (and name_1), each tokenizer its own.
    assert pipe.tokenizer is not pipe.tokenizer_2
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert {"zorblat", "zorblat_1"} <= set(tokenizer.get_added_vocab())
    digest = hashlib.sha256((folders["embeddings"] / "zorblat.safetensors").read_bytes()).hexdigest()[:12]
    assert parse_infotext(used.infotexts[0]).params["TI hashes"] == f"zorblat: {digest}"
    assert same(run().images[0], base)  # still loaded, not named: the base picture, pixel for pixel
    assert same(run(prompt="a zorblat circle").images[0], used.images[0])  # cached: the same picture again


def test_sdxl_embedding_is_its_vectors_in_both_encoders(run):
    red = run(prompt="a red circle").images[0]
    assert not same(red, run().images[0])
    assert same(run(prompt="a crimsonxl circle").images[0], red)
    assert same(run(negative_prompt="embedding:crimsonxl").images[0], run(negative_prompt="red").images[0])


def test_sd1_embedding_on_sdxl_and_sdxl_embedding_on_sd1_are_refused_by_kind(run, base):
    with pytest.raises(ValidationError, match=r"oldstyle\.safetensors .* is an SD 1\.x/2\.x embedding") as caught:
        run(prompt="a oldstyle circle")
    assert caught.value.field == "prompt" and "SDXL model" in str(caught.value)
    with pytest.raises(ValidationError, match=r"zorblat\.safetensors .* is an SDXL embedding") as caught:
        run(prompt="a zorblat circle", model=TINY)
    assert "SD 1.x/2.x model" in str(caught.value)
    with pytest.raises(ValidationError, match=r"swapped\.safetensors .*clip_l vectors are 48 wide.* takes 32"):
        run(prompt="a swapped circle")
    assert same(run().images[0], base)  # the refusals left the model as it was


def test_sdxl_embedding_is_listed_with_both_widths(engine):
    # A1111's /sdapi/v1/embeddings entry: vectors per encoder, and the two widths together.
    listed = engine.networks.embedding_list()
    assert (listed["zorblat"]["vectors"], listed["zorblat"]["shape"]) == (2, 32 + 48)
    assert (listed["oldstyle"]["vectors"], listed["oldstyle"]["shape"]) == (1, 32)


def test_sdxl_embedding_in_a_prompt_with_syntax(run):
    # The syntax path (compel in both encoders) reads embeddings as the pipeline's own encoding does: crimsonxl is
    # "red" in each encoder, and the two-vector zorblat is expanded to both its tokens in each tokenizer.
    assert same(run(prompt="a (crimsonxl:1.4) circle").images[0], run(prompt="a (red:1.4) circle").images[0])
    assert same(run(prompt="a (zorblat:1) circle").images[0], run(prompt="a zorblat circle").images[0])
    weighted = run(prompt="a (zorblat:1.4) circle BREAK square", negative_prompt="[crimsonxl]").images[0]
    assert not same(weighted, run(prompt="a zorblat circle BREAK square", negative_prompt="[crimsonxl]").images[0])
    assert same(run(negative_prompt="(embedding:crimsonxl:1.2)").images[0], run(negative_prompt="(red:1.2)").images[0])
