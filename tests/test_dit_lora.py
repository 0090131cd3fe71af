"""LoRA tags on the tiny FLUX and SD 3.x models, in diffusers' (PEFT) format and in Kohya's FLUX format.

The files are written here with random weights for the tiny transformers' attention layers: diffusers keys
(``transformer.transformer_blocks.0.attn.to_q.lora_A.weight``) and Kohya's (``lora_unet_double_blocks_0_img_attn_qkv
.lora_down.weight``, fused q/k/v, with ``alpha``), which diffusers' FLUX loader converts. A LoRA changes the
pixels, weight 0 gives the base model's, and a prompt without the tag gives the base model's pixels exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
WIDTH = 32  # both tiny transformers' inner width (heads × head size)
RANK = 4


def lora_pair(rows: int, generator: torch.Generator, scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(RANK, WIDTH, generator=generator) * scale
    return down, torch.randn(rows, RANK, generator=generator) * scale


def write_peft(path: Path, seed: int) -> None:
    """diffusers' own format: the transformer's attention projections of block 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in ("to_q", "to_k", "to_v", "to_out.0"):
        down, up = lora_pair(WIDTH, generator)
        state[f"transformer.transformer_blocks.0.attn.{name}.lora_A.weight"] = down
        state[f"transformer.transformer_blocks.0.attn.{name}.lora_B.weight"] = up.contiguous()
    save_file(state, path)


def write_kohya_flux(path: Path, seed: int) -> None:
    """Kohya's (sd-scripts) FLUX format: fused q/k/v of the image stream, its output projection, alpha = rank."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, rows in (("img_attn_qkv", 3 * WIDTH), ("img_attn_proj", WIDTH), ("txt_attn_qkv", 3 * WIDTH)):
        down, up = lora_pair(rows, generator)
        state[f"lora_unet_double_blocks_0_{key}.lora_down.weight"] = down
        state[f"lora_unet_double_blocks_0_{key}.lora_up.weight"] = up
        state[f"lora_unet_double_blocks_0_{key}.alpha"] = torch.tensor(float(RANK))
    save_file(state, path)


def addnet_hash(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dit-loras")
    write_peft(folder / "flux_peft.safetensors", seed=1)
    write_kohya_flux(folder / "flux_kohya.safetensors", seed=2)
    write_peft(folder / "sd3_peft.safetensors", seed=3)
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir, loras) -> Engine:
    out = tmp_path_factory.mktemp("dit-lora-out")
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, save_outputs=False, lora_dirs=str(loras)))


def run(engine: Engine, model: str, prompt: str):
    request = Txt2ImgRequest(prompt=prompt, seed=5, steps=3, width=64, height=64, sampler="Euler", model=model,
                             guidance_scale=1.0 if model == FLUX else 4.5)
    return engine.run(request)


@pytest.mark.parametrize(
    "model, name", [(FLUX, "flux_peft"), (FLUX, "flux_kohya"), (SD3, "sd3_peft")], ids=["flux", "kohya", "sd3"]
)
def test_lora_changes_pixels_and_leaving_it_out_restores_the_base_exactly(engine, loras, model, name):
    prompt = "a red circle"
    base = pixels(run(engine, model, prompt).images[0])
    full = run(engine, model, f"{prompt} <lora:{name}:1>")
    half = pixels(run(engine, model, f"{prompt} <lora:{name}:0.5>").images[0])
    zero = pixels(run(engine, model, f"{prompt} <lora:{name}:0>").images[0])
    after = pixels(run(engine, model, prompt).images[0])
    assert not np.array_equal(pixels(full.images[0]), base)
    assert np.abs(pixels(full.images[0]) - base).mean() > np.abs(half - base).mean() > 0  # the weight scales it
    assert np.abs(zero - base).max() <= 1
    assert np.array_equal(after, base)
    info = parse_infotext(full.infotexts[0])
    assert info.params["Lora hashes"] == f"{name}: {addnet_hash(loras / f'{name}.safetensors')}"
    assert f"<lora:{name}:1>" in info.prompt  # the tag stays in the prompt the infotext records


def test_the_kohya_file_loads_into_the_transformer(engine):
    run(engine, FLUX, "a cat <lora:flux_kohya:1>")
    transformer = engine.cache.pipeline(FLUX, "txt2img").transformer
    attention = transformer.transformer_blocks[0].attn
    # q, k, v of the fused qkv, and the text stream's add_q/k/v projections: each got the adapter.
    assert all(hasattr(getattr(attention, name), "lora_A") for name in ("to_q", "to_k", "to_v", "add_k_proj"))
    assert hasattr(attention.to_out[0], "lora_A")
    assert any(adapter.startswith("lora_") for adapter in transformer.peft_config)


def test_two_loras_at_once(engine):
    one = pixels(run(engine, FLUX, "a cat <lora:flux_peft:1>").images[0])
    both = run(engine, FLUX, "a cat <lora:flux_peft:1> <lora:flux_kohya:1>")
    assert not np.array_equal(pixels(both.images[0]), one)
    assert parse_infotext(both.infotexts[0]).params["Lora hashes"].count(": ") == 2


def test_embeddings_are_still_refused_and_a_missing_lora_named(engine):
    with pytest.raises(ValidationError) as refused:
        run(engine, FLUX, "a cat embedding:nothing")
    assert refused.value.field == "prompt" and "embeddings" in str(refused.value)
    with pytest.raises(ValidationError) as missing:
        run(engine, SD3, "a cat <lora:nowhere:1>")
    assert missing.value.field == "prompt" and "nowhere" in str(missing.value)
