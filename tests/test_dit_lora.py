"""LoRA tags on the tiny FLUX, SD 3.x and Chroma models, in the layouts people download.

The files are written here with random weights for the tiny transformers' attention layers, in each layout's own key
names: diffusers' (PEFT: ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight``), Kohya's
(``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight``, fused q/k/v, with ``alpha``), XLabs'
(``double_blocks.0.processor.qkv_lora1.down.weight``), ComfyUI's (``diffusion_model.double_blocks.0.img_attn.qkv
.lora_down.weight``) and the original BFL names with PEFT's ``lora_A`` / ``lora_B`` (ai-toolkit's, Chroma trainers').
A LoRA changes the pixels, weight 0 gives the base model's, and a prompt without the tag gives the base model's pixels
exactly; a LoRA that matches nothing in the model is refused, naming the file. (BFL's control LoRAs, FLUX Canny /
Depth dev, go through diffusers' converter for the real 19 + 38 block, 3072-wide model only: no tiny test.)
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
from backend.models.checkpoints import CheckpointError, detect
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
CHROMA = "Tiny Chroma (offline test model)"
WIDTH = 32  # the tiny transformers' inner width (heads × head size)
RANK = 4
# (key in the original layout, output rows) of the double block 0 attention layers a FLUX / Chroma LoRA here touches.
DOUBLE_BLOCK = (("img_attn.qkv", 3 * WIDTH), ("img_attn.proj", WIDTH), ("txt_attn.qkv", 3 * WIDTH))


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


def write_bfl(path: Path, seed: int, prefix: str = "diffusion_model.", down: str = "lora_A", up: str = "lora_B"):
    """The original BFL key names: ``lora_A`` / ``lora_B`` (ai-toolkit, Chroma trainers) or, with ``down="lora_down"``,
    ComfyUI's ``lora_down`` / ``lora_up`` form."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, rows in DOUBLE_BLOCK:
        first, second = lora_pair(rows, generator)
        state[f"{prefix}double_blocks.0.{key}.{down}.weight"] = first
        state[f"{prefix}double_blocks.0.{key}.{up}.weight"] = second
    save_file(state, path)


def write_xlabs(path: Path, seed: int) -> None:
    """XLabs' FLUX format: attention processors' ``qkv_lora1`` (image) / ``qkv_lora2`` (text), ``proj_lora1``."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, rows in (("qkv_lora1", 3 * WIDTH), ("proj_lora1", WIDTH), ("qkv_lora2", 3 * WIDTH)):
        first, second = lora_pair(rows, generator)
        state[f"double_blocks.0.processor.{key}.down.weight"] = first
        state[f"double_blocks.0.processor.{key}.up.weight"] = second
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
    write_xlabs(folder / "flux_xlabs.safetensors", seed=4)
    write_bfl(folder / "flux_bfl.safetensors", seed=5)
    write_bfl(folder / "flux_comfyui.safetensors", seed=6, down="lora_down", up="lora_up")
    write_bfl(folder / "chroma_bfl.safetensors", seed=7, prefix="")
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir, loras) -> Engine:
    out = tmp_path_factory.mktemp("dit-lora-out")
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, save_outputs=False, lora_dirs=str(loras)))


def run(engine: Engine, model: str, prompt: str):
    request = Txt2ImgRequest(prompt=prompt, seed=5, steps=3, width=64, height=64, sampler="Euler", model=model,
                             guidance_scale=4.5 if model == SD3 else 1.0)
    return engine.run(request)


@pytest.mark.parametrize(
    "model, name",
    [(FLUX, "flux_peft"), (FLUX, "flux_kohya"), (SD3, "sd3_peft"), (FLUX, "flux_xlabs"), (FLUX, "flux_bfl"),
     (FLUX, "flux_comfyui"), (CHROMA, "chroma_bfl")],
    ids=["flux", "kohya", "sd3", "xlabs", "bfl", "comfyui", "chroma-bfl"],
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


@pytest.mark.parametrize("name", ["flux_xlabs", "flux_bfl", "flux_comfyui"])
def test_each_flux_layout_loads_into_the_attention_layers_it_names(engine, name):
    run(engine, FLUX, f"a cat <lora:{name}:1>")
    attention = engine.cache.pipeline(FLUX, "txt2img").transformer.transformer_blocks[0].attn
    adapter = next(a for a in attention.to_q.lora_A if a.startswith("lora_"))
    # image q/k/v and output (img_attn.qkv / proj), text q/k/v (txt_attn.qkv): each got the adapter's matrices.
    for layer in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
        assert adapter in getattr(attention, layer).lora_A
    assert adapter in attention.to_out[0].lora_A


def test_a_lora_that_matches_nothing_is_refused_naming_the_file(engine):
    """A FLUX LoRA on SD 3: diffusers loads nothing and only warns; the run is refused, never made without it."""
    with pytest.raises(ValidationError) as refused:
        run(engine, SD3, "a cat <lora:flux_xlabs:1>")
    assert refused.value.field == "prompt"
    assert "flux_xlabs.safetensors" in str(refused.value) and "none of its weights matched" in str(refused.value)
    base = pixels(run(engine, SD3, "a cat").images[0])  # the model still runs, without the adapter
    assert base.shape == (64, 64, 3)


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


def test_a_lora_in_a_checkpoint_folder_is_named_as_one_in_every_format(loras):
    # XLabs' keys carry no lora_ prefix; the scan must still say "a LoRA", not "unknown tensors"
    for name in ("flux_xlabs", "flux_kohya", "flux_bfl", "flux_peft"):
        with pytest.raises(CheckpointError, match="this is a LoRA, not a checkpoint"):
            detect(loras / f"{name}.safetensors")
