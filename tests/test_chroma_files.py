"""Chroma single files, offline: transformer-only files in lodestones' original layout (safetensors, fp8, GGUF Q8_0)
paired with a T5 file and FLUX's VAE, an all-in-one file, detection from the header, the config derived from the
shapes, the message for a file without T5, and LoRA tags on Chroma (diffusers' FLUX LoRA loader, which
ChromaPipeline has).

The files are written from the tiny Chroma (``tests/dit_files.py``) with a tiny config folder standing in for the
shipped full-size one, so the app goes through the real loading path: the same weights give the folder model's
pixels for the same seed; Q8_0 and fp8 round the weights, so theirs are close (a stated tolerance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.models import dit_files, dit_keys, tiny_dit
from backend.models.checkpoints import Checkpoint, Shape, config_dir
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels
from .dit_files import save_all_in_one, save_gguf, save_parts, save_transformer
from .ldm_layout import save_config_folder

CHROMA = "Tiny Chroma (offline test model)"
# (mean, max) |Δ| against the folder model in 0-255 levels. Measured (pytest -s -m "slow or not slow"
# tests/test_chroma_files.py -k generate): Q8_0 0.13 / 1, fp8 1.01 / 6; the plain and all-in-one files 0 / 0.
EXACT, Q8_0, FP8_CLOSE = (0.01, 1), (0.5, 4), (3.0, 24)
RANK, WIDTH = 4, 32  # the tiny Chroma's inner width


@pytest.fixture(scope="module")
def tiny(cache_dir) -> DiffusionPipeline:
    """The built-in tiny Chroma as the engine loads it (same folder, same weights)."""
    return DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / "tiny-chroma", "chroma"))


def write_peft_lora(path: Path, seed: int) -> Path:
    """A LoRA in diffusers' (PEFT) format on the attention projections of the transformer's double block."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj"):
        prefix = f"transformer.transformer_blocks.0.attn.{name}"
        state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, WIDTH, generator=generator) * 0.5
        state[f"{prefix}.lora_B.weight"] = torch.randn(WIDTH, RANK, generator=generator) * 0.5
    save_file(state, str(path))
    return path


def write_kohya_lora(path: Path, seed: int) -> Path:
    """Kohya's (sd-scripts) FLUX format, which Chroma LoRAs trained with it use: fused q/k/v, alpha = rank."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, rows in (("img_attn_qkv", 3 * WIDTH), ("img_attn_proj", WIDTH), ("txt_attn_qkv", 3 * WIDTH)):
        prefix = f"lora_unet_double_blocks_0_{key}"
        state[f"{prefix}.lora_down.weight"] = torch.randn(RANK, WIDTH, generator=generator) * 0.5
        state[f"{prefix}.lora_up.weight"] = torch.randn(rows, RANK, generator=generator) * 0.5
        state[f"{prefix}.alpha"] = torch.tensor(float(RANK))
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chroma-files")
    unet, te, vae = root / "unet", root / "te", root / "vae"
    save_config_folder(tiny, root / "configs" / "chroma")
    save_transformer(tiny, "chroma", unet / "Chroma1-HD-ft.safetensors")
    save_transformer(tiny, "chroma", unet / "chroma-unlocked-v50-fp8.safetensors", torch.float8_e4m3fn)
    save_gguf(tiny, "chroma", unet / "Chroma1-HD-ft-Q8_0.gguf")
    save_parts(tiny, "chroma", te, vae, "ae")
    save_all_in_one(tiny, "chroma", root / "checkpoints" / "chroma-aio.safetensors")  # T5 and VAE inside
    (root / "loras").mkdir()
    write_peft_lora(root / "loras" / "chroma_style.safetensors", seed=3)
    write_kohya_lora(root / "loras" / "chroma_kohya.safetensors", seed=4)
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory, cache_dir) -> Engine:
    settings = Settings(
        offline=True,
        checkpoints_dir=str(folders / "checkpoints"),
        unet_dir=str(folders / "unet"),
        text_encoder_dir=str(folders / "te"),
        vae_dir=str(folders / "vae"),
        lora_dirs=str(folders / "loras"),
        checkpoint_configs=folders / "configs",
        output_dir=tmp_path_factory.mktemp("chroma-files-out"),
        cache_dir=cache_dir,
        save_outputs=False,
        max_models=6,
    )
    return Engine(settings)


def run(engine: Engine, model: str, seed: int = 7, prompt: str = "a red circle on a blue background") -> np.ndarray:
    request = Txt2ImgRequest(prompt=prompt, negative_prompt="blurry", seed=seed, steps=3, width=64, height=64,
                             sampler="Euler", schedule="Automatic", model=model, guidance_scale=4.0)
    return pixels(engine.run(request).images[0]).astype(np.int16)


@pytest.fixture(scope="module")
def references(engine) -> tuple[np.ndarray, np.ndarray]:
    """The folder model's pictures for seeds 7 and 8."""
    return run(engine, CHROMA), run(engine, CHROMA, seed=8)


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, Shape]:
    return {k: Shape(list(v.shape)) for k, v in state.items()}


def test_original_layout_round_trips_and_matches_diffusers_converter(tiny):
    """Our names are those diffusers' Chroma converter reads. It splits a single block's linear1 at FLUX.1's width
    3072, so it is handed a stand-in single block of that width and compared on every other tensor."""
    from diffusers.loaders.single_file_utils import convert_chroma_transformer_checkpoint_to_diffusers

    state = tiny.transformer.state_dict()
    original = dit_keys.to_original("chroma", state)
    assert not any(".img_mod." in k or "modulation" in k or k.startswith(("time_in", "vector_in")) for k in original)
    back = dit_keys.to_diffusers("chroma", original)
    assert back.keys() == state.keys() and all(torch.equal(back[k], v) for k, v in state.items())
    wide = {**original, "single_blocks.0.linear1.weight": torch.zeros(3 * 3072 + 4 * 3072, WIDTH),
            "single_blocks.0.linear1.bias": torch.zeros(3 * 3072 + 4 * 3072)}
    theirs = convert_chroma_transformer_checkpoint_to_diffusers(dict(wide))
    assert theirs.keys() == state.keys()
    assert all(torch.equal(theirs[k], v) for k, v in state.items() if not k.startswith("single_transformer_blocks"))


def test_family_variant_and_config_come_from_the_shapes(tiny):
    shapes = shapes_of(dit_keys.to_original("chroma", tiny.transformer.state_dict()))
    assert dit_keys.family_of(shapes) == "chroma" and dit_keys.identify(shapes) == ("chroma", "Chroma")
    config = dit_keys.transformer_config("chroma", shapes, 0)
    for key, value in config.items():
        assert tiny.transformer.config[key] in (value, None), key  # out_channels None: the same as in_channels
    assert config["approximator_layers"] == 1 and config["approximator_num_channels"] == 16
    radiance = {k: v for k, v in shapes.items() if not k.startswith("img_in.")}  # pixel space: no latent patches
    assert dit_keys.identify(radiance) == ("chroma-radiance", "Chroma Radiance")


def test_chroma_files_are_listed_with_t5_and_flux_vae(engine):
    for name in ("Chroma1-HD-ft", "chroma-unlocked-v50-fp8", "Chroma1-HD-ft-Q8_0"):
        spec = engine.registry.get(name)
        assert spec.family == "chroma" and spec.kind == "single_file" and "Chroma checkpoint" in spec.description
        assert {k: Path(v).name for k, v in spec.parts} == {"t5xxl": "t5xxl_fp16.safetensors", "vae": "ae.safetensors"}
    assert engine.registry.get("chroma-aio").family == "chroma" and engine.registry.get("chroma-aio").parts == ()
    assert not [p for p in engine.registry.problems if "Chroma" in p or "chroma" in p]


def test_a_chroma_file_without_t5_names_what_it_needs(folders):
    path = folders / "unet" / "Chroma1-HD-ft.safetensors"
    lone = Checkpoint("Chroma1-HD-ft", path, "chroma", False, "flow_prediction", "Chroma", "chroma")
    vae = dit_files.Part(folders / "vae" / "ae.safetensors", "vae", 16)
    kept, problems = dit_files.pair([lone], {"vae": [vae]})
    assert kept == [] and problems == [
        "Chroma1-HD-ft.safetensors: a Chroma transformer without t5xxl; put t5xxl_fp16.safetensors in "
        "models/text_encoders (or models/clip), then press Refresh"]
    _, problems = dit_files.pair([lone], {})
    assert "without t5xxl, vae; put t5xxl_fp16.safetensors, ae.safetensors (FLUX's VAE) in" in problems[0]
    clip = dit_files.Part(folders / "te" / "clip_l.safetensors", "clip_l", 32)  # Chroma takes no CLIP
    kept, problems = dit_files.pair([lone], {"clip_l": [clip], "vae": [vae]})
    assert kept == [] and "without t5xxl;" in problems[0]


def test_a_radiance_file_is_refused_by_name(tmp_path):
    tensors = {"double_blocks.0.img_attn.qkv.weight": (6, 2), "distilled_guidance_layer.in_proj.weight": (2, 2),
               "img_in_patch.weight": (2, 3, 2, 2)}  # Radiance patches pixels: no img_in
    save_file({k: torch.zeros(shape) for k, shape in tensors.items()}, str(tmp_path / "radiance.safetensors"))
    assert dit_files.scan_transformers([tmp_path]).problems == [
        "radiance.safetensors: a Chroma Radiance model, which SD Studio does not run from a single file"]


@pytest.mark.parametrize(
    ("model", "tolerance"),
    [
        ("Chroma1-HD-ft", EXACT),
        ("Chroma1-HD-ft-Q8_0", Q8_0),  # 8 bits per weight, a scale per 32
        pytest.param("chroma-unlocked-v50-fp8", FP8_CLOSE, marks=pytest.mark.slow),  # e4m3: 3 mantissa bits
        pytest.param("chroma-aio", EXACT, marks=pytest.mark.slow),
    ],
)
def test_single_files_generate_the_folder_models_pixels(engine, references, model, tolerance):
    reference, other_seed = references
    picture = run(engine, model)
    difference, largest = np.abs(picture - reference).mean(), np.abs(picture - reference).max()
    print(f"{model}: mean |Δ| {difference:.3f}, max {largest} (0-255 levels)")
    assert difference <= tolerance[0] and largest <= tolerance[1], (difference, largest)
    assert difference < np.abs(other_seed - reference).mean() / 2  # far closer than another seed's picture
    assert engine.cache.model(model).base.transformer.__class__.__name__ == "ChromaTransformer2DModel"


@pytest.mark.parametrize(("model", "lora"), [(CHROMA, "chroma_style"), ("Chroma1-HD-ft", "chroma_style"),
                                           (CHROMA, "chroma_kohya")], ids=["folder", "single-file", "kohya"])
def test_a_lora_changes_chroma_and_leaving_it_out_restores_the_base_exactly(engine, model, lora):
    base = run(engine, model, prompt="a red circle")
    full = run(engine, model, prompt=f"a red circle <lora:{lora}:1>")
    half = run(engine, model, prompt=f"a red circle <lora:{lora}:0.5>")
    assert np.abs(full - base).mean() > np.abs(half - base).mean() > 0  # the weight scales it
    transformer = engine.cache.pipeline(model, "txt2img").transformer
    assert hasattr(transformer.transformer_blocks[0].attn.to_q, "lora_A")
    assert np.array_equal(run(engine, model, prompt="a red circle"), base)


def test_shipped_chroma_config_folder_is_complete(tmp_path):
    from diffusers import ChromaTransformer2DModel
    from transformers import AutoTokenizer

    folder = config_dir(Settings(cache_dir=tmp_path), "chroma")
    config = ChromaTransformer2DModel.load_config(str(folder), subfolder="transformer", local_files_only=True)
    assert config["axes_dims_rope"] == [16, 56, 56] and config["attention_head_dim"] == 128  # Chroma1-HD's
    assert len(AutoTokenizer.from_pretrained(folder / "tokenizer")("a red circle").input_ids) >= 4
    assert not list(folder.rglob("*.safetensors*"))


@pytest.mark.slow
def test_a_real_width_chroma_file_loads_with_the_shipped_config(tmp_path):
    """Chroma1's real widths (3072 wide, 24 heads of 128, T5 4096, approximator 64 → 5120), one double and one
    single block and one approximator layer (~0.55 B parameters, bf16): written in the original layout, detected,
    loaded with the shipped config folder, and the same output as the module it was written from."""
    from diffusers import ChromaTransformer2DModel

    torch.manual_seed(0)
    model = ChromaTransformer2DModel(num_layers=1, num_single_layers=1, approximator_layers=1).to(torch.bfloat16)
    path = tmp_path / "chroma-2blocks.safetensors"
    save_file({k: v.contiguous() for k, v in dit_keys.to_original("chroma", model.eval().state_dict()).items()},
              str(path))
    found = dit_files.scan_transformers([tmp_path]).checkpoints
    assert [(c.name, c.family, c.label) for c in found] == [("chroma-2blocks", "chroma", "Chroma")]
    config = str(config_dir(Settings(cache_dir=tmp_path / "cache"), "chroma"))
    loaded = dit_files.load_transformer(path, "chroma", config, torch.bfloat16).eval()
    assert (loaded.config.num_layers, loaded.config.approximator_layers) == (1, 1)
    inputs = dict(hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16),
                  encoder_hidden_states=torch.randn(1, 8, 4096, dtype=torch.bfloat16),
                  timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3))
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).sample, model(**inputs).sample)

