"""FLUX and SD3 single files, offline: all-in-one checkpoints, transformer-only files (safetensors, fp8, GGUF Q8_0)
with separate text encoders and VAE, detection from the header, the config derived from the shapes, and the
messages for files that are none of these.

The files are written from the tiny FLUX / SD3 models (``tests/dit_files.py``) in the original BFL / SAI key names,
with a tiny config folder standing in for the shipped full-size ones, so the app goes through the real loading path.
Where the weights are the same, the single file's pixels match the folder model's for the same seed; fp8 and Q8_0
round the weights, so their pixels are close (a stated tolerance) and still closer than another seed's.
"""

from __future__ import annotations

import json
import os
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

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
FP8 = torch.float8_e4m3fn
# Pixel tolerances against the folder model, (mean, max) |Δ| in 0-255 levels. Same weights: float rounding may move
# a pixel by one level. Measured (pytest -s -m "slow or not slow" -k generate): Q8_0 0.12 / 1 (FLUX), 0.10 / 1
# (SD3); fp8 0.85 / 7.
EXACT, Q8_0, FP8_CLOSE = (0.01, 1), (0.5, 4), (3.0, 24)


@pytest.fixture(scope="module")
def tiny(cache_dir) -> dict[str, DiffusionPipeline]:
    """The built-in tiny models as the engine loads them (same folders, same weights)."""
    return {kind: DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / f"tiny-{kind}", kind))
            for kind in ("flux", "sd3")}


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dit-files")
    ckpt, unet, diffusion, te, vae = (root / n for n in ("checkpoints", "unet", "diffusion_models", "te", "vae"))
    flux, sd3 = tiny["flux"], tiny["sd3"]
    for kind, pipe in tiny.items():
        save_config_folder(pipe, root / "configs" / kind)
    save_all_in_one(flux, "flux", ckpt / "flux-aio.safetensors")
    save_all_in_one(sd3, "sd3", ckpt / "sd3-aio.safetensors")
    save_transformer(flux, "flux", unet / "flux-dev.safetensors")
    save_transformer(flux, "flux", unet / "flux-dev-fp8.safetensors", FP8)
    save_gguf(flux, "flux", unet / "flux-dev-Q8_0.gguf")
    schnell = {k: v for k, v in dit_keys.to_original("flux", flux.transformer.state_dict()).items()
               if not k.startswith("guidance_in.")}
    save_file({k: v.contiguous() for k, v in schnell.items()}, str(unet / "flux-schnell-tune.safetensors"))
    save_transformer(sd3, "sd3", diffusion / "sd3-medium.safetensors")
    save_gguf(sd3, "sd3", diffusion / "sd3-medium-Q8_0.gguf")
    save_parts(flux, "flux", te, vae, "ae")
    save_parts(sd3, "sd3", te / "sd3", vae, "sd3_vae")
    for name in ("clip_l", "clip_g", "t5xxl_fp16"):  # one folder, as ComfyUI has it; the tiny SD3's are other sizes
        if (te / "sd3" / f"{name}.safetensors").exists():
            (te / "sd3" / f"{name}.safetensors").rename(te / f"sd3_{name}.safetensors")
    # Files that are none of these: each is skipped with a message, the app keeps serving.
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8)},
              str(unet / "flux-style-lora.safetensors"))
    save_file({"decoder.conv_in.weight": torch.zeros(8, 16, 3, 3)}, str(unet / "ae-copy.safetensors"))
    save_file({"something.else.weight": torch.zeros(4, 4)}, str(unet / "mystery.safetensors"))
    gguf = (unet / "flux-dev-Q8_0.gguf").read_bytes()
    (unet / "broken-Q8_0.gguf").write_bytes(gguf[: len(gguf) // 3])
    aio = (ckpt / "flux-aio.safetensors").read_bytes()
    (ckpt / "flux-half.safetensors").write_bytes(aio[: len(aio) // 2])
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory, cache_dir) -> Engine:
    settings = Settings(
        offline=True,
        checkpoints_dir=str(folders / "checkpoints"),
        unet_dir=os.pathsep.join([str(folders / "unet"), str(folders / "diffusion_models")]),
        text_encoder_dir=str(folders / "te"),
        vae_dir=str(folders / "vae"),
        checkpoint_configs=folders / "configs",
        output_dir=tmp_path_factory.mktemp("dit-files-out"),
        cache_dir=cache_dir,
        max_models=12,  # every model stays loaded: each test loads its file once
    )
    return Engine(settings)


def run(engine: Engine, model: str, seed: int = 7) -> np.ndarray:
    family = engine.registry.get(model).family
    request = Txt2ImgRequest(
        prompt="a red circle on a blue background", seed=seed, steps=3, width=64, height=64, sampler="Euler",
        schedule="Automatic", model=model, guidance_scale=1.0 if family == "flux" else 4.5,
    )
    return pixels(engine.run(request).images[0]).astype(np.int16)


@pytest.fixture(scope="module")
def references(engine) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The folder models' pictures for seeds 7 and 8."""
    return {model: (run(engine, model), run(engine, model, seed=8)) for model in (FLUX, SD3)}


def test_original_layout_round_trips_and_matches_diffusers_sd3_converter(tiny):
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    for kind, pipe in tiny.items():
        state = pipe.transformer.state_dict()
        original = dit_keys.to_original(kind, state)
        back = dit_keys.to_diffusers(kind, original)
        assert back.keys() == state.keys() and all(torch.equal(back[k], v) for k, v in state.items())
    sd3 = tiny["sd3"].transformer.state_dict()
    theirs = convert_sd3_transformer_checkpoint_to_diffusers(dict(dit_keys.to_original("sd3", sd3)))
    assert all(torch.equal(theirs[k], v) for k, v in sd3.items())


def shapes_of(state: dict[str, torch.Tensor], **extra: tuple[int, ...]) -> dict[str, Shape]:
    return {**{k: Shape(list(v.shape)) for k, v in state.items()}, **{k: Shape(list(s)) for k, s in extra.items()}}


def test_variant_and_config_come_from_the_shapes(tiny):
    flux = dit_keys.to_original("flux", tiny["flux"].transformer.state_dict())
    assert dit_keys.identify(shapes_of(flux)) == ("flux-dev", "FLUX.1 dev")
    schnell = {k: v for k, v in flux.items() if not k.startswith("guidance_in")}
    assert dit_keys.identify(shapes_of(schnell)) == ("flux-schnell", "FLUX.1 schnell")
    config = dit_keys.transformer_config("flux", shapes_of(schnell), 0)
    assert config["guidance_embeds"] is False and config["num_layers"] == 1 and config["num_attention_heads"] == 2
    fill = {**shapes_of(flux), "img_in.weight": Shape([32, 384])}
    assert dit_keys.identify(fill)[0] == "flux-fill"
    sd3 = dit_keys.to_original("sd3", tiny["sd3"].transformer.state_dict())
    assert dit_keys.identify(shapes_of(sd3)) == ("sd3", "SD3 Medium")
    large = shapes_of(sd3, **{"joint_blocks.0.x_block.attn.ln_q.weight": (8,)})
    assert dit_keys.identify(large) == ("sd35_large", "SD 3.5 Large")
    assert dit_keys.transformer_config("sd3", large, 64)["qk_norm"] == "rms_norm"
    medium = {**large, "joint_blocks.0.x_block.attn2.qkv.weight": Shape([96, 32])}
    assert dit_keys.identify(medium) == ("sd35_medium", "SD 3.5 Medium")
    assert dit_keys.transformer_config("sd3", medium, 64)["dual_attention_layers"] == (0,)


def test_every_layout_is_listed_with_its_variant_and_parts(engine, folders):
    spec = engine.registry.get
    assert spec("flux-aio").family == "flux" and "FLUX.1 dev checkpoint" in spec("flux-aio").description
    assert spec("flux-aio").parts == ()  # everything is inside the file
    parts = dict(spec("flux-dev").parts)
    assert {k: Path(v).name for k, v in parts.items()} == {
        "clip_l": "clip_l.safetensors", "t5xxl": "t5xxl_fp16.safetensors", "vae": "ae.safetensors"}
    assert {k: Path(v).name for k, v in spec("sd3-medium").parts} == {
        "clip_l": "sd3_clip_l.safetensors", "clip_g": "sd3_clip_g.safetensors",
        "t5xxl": "sd3_t5xxl_fp16.safetensors", "vae": "sd3_vae.safetensors"}
    assert spec("sd3-medium").family == "sd3" and "SD3 Medium" in spec("sd3-medium").description
    assert spec("flux-dev-Q8_0").kind == "single_file" and spec("flux-dev-fp8").family == "flux"
    assert "FLUX.1 schnell" in spec("flux-schnell-tune").description
    assert spec("flux-schnell-tune").config.endswith("flux-schnell")


def test_files_that_are_none_of_these_get_a_message(engine):
    problems = "\n".join(engine.registry.problems)
    assert "flux-style-lora.safetensors: a LoRA (it goes in models/loras)" in problems
    assert "ae-copy.safetensors: a VAE (it goes in models/vae)" in problems
    assert "mystery.safetensors: not a FLUX or SD3 transformer (unknown tensors such as something.else" in problems
    assert "broken-Q8_0.gguf: not a complete GGUF file" in problems
    assert "flux-half.safetensors: the file is truncated" in problems
    for name in ("flux-style-lora", "ae-copy", "mystery", "broken-Q8_0", "flux-half"):
        assert name not in engine.registry.names


def test_a_transformer_without_text_encoders_names_what_it_needs(folders):
    path = folders / "unet" / "flux-dev.safetensors"
    lone = Checkpoint("flux-dev", path, "flux", False, "flow_prediction", "FLUX.1 dev", "flux")
    kept, problems = dit_files.pair([lone], {})
    assert kept == [] and problems == [
        "flux-dev.safetensors: a FLUX.1 dev transformer without clip_l, t5xxl, vae; put clip_l.safetensors, "
        "t5xxl_fp16.safetensors, ae.safetensors (FLUX) or the SD3 VAE in models/text_encoders (or models/clip) and "
        "the VAE in models/vae, then press Refresh"]
    sd3_t5 = dit_files.Part(folders / "te" / "sd3_t5xxl_fp16.safetensors", "t5xxl", 64)
    _, problems = dit_files.pair([lone], {"t5xxl": [sd3_t5]})
    assert "sd3_t5xxl_fp16.safetensors do not fit it" in problems[0]


@pytest.mark.parametrize(
    ("model", "folder_model", "tolerance"),
    [
        ("flux-dev", FLUX, EXACT), ("sd3-aio", SD3, EXACT),
        # Rounded weights: Q8_0 keeps 8 bits per weight with a scale per 32, fp8 (e4m3) 3 mantissa bits.
        ("flux-dev-Q8_0", FLUX, Q8_0),
        # The same code paths with the other family or file (run with -m slow).
        pytest.param("flux-aio", FLUX, EXACT, marks=pytest.mark.slow),
        pytest.param("sd3-medium", SD3, EXACT, marks=pytest.mark.slow),
        pytest.param("flux-dev-fp8", FLUX, FP8_CLOSE, marks=pytest.mark.slow),
        pytest.param("sd3-medium-Q8_0", SD3, Q8_0, marks=pytest.mark.slow),
    ],
)
def test_single_files_generate_the_folder_models_pixels(engine, references, model, folder_model, tolerance):
    reference, other_seed = references[folder_model]
    picture = run(engine, model)
    difference, largest = np.abs(picture - reference).mean(), np.abs(picture - reference).max()
    print(f"{model}: mean |Δ| {difference:.3f}, max {largest} (0-255 levels)")
    assert difference <= tolerance[0] and largest <= tolerance[1], (difference, largest)
    assert difference < np.abs(other_seed - reference).mean() / 2  # far closer than another seed's picture


@pytest.mark.slow
def test_a_schnell_file_derives_its_config_and_generates(engine):
    picture = run(engine, "flux-schnell-tune")
    transformer = engine.cache.model("flux-schnell-tune").base.transformer
    assert transformer.config.guidance_embeds is False and picture.std() > 0


def test_shipped_config_folders_are_complete(tmp_path):
    from transformers import AutoTokenizer

    settings = Settings(cache_dir=tmp_path)
    for name in ("flux", "flux-schnell", "sd3"):
        folder = config_dir(settings, name)
        index = json.loads((folder / "model_index.json").read_text())
        for component, (library, _) in ((k, v) for k, v in index.items() if not k.startswith("_") and v[0]):
            assert (folder / component).is_dir(), (name, component, library)
            if component.startswith("tokenizer"):
                tokens = AutoTokenizer.from_pretrained(folder / component)("a red circle").input_ids
                assert len(tokens) >= 4
    assert json.loads((config_dir(settings, "flux-schnell") / "scheduler" / "scheduler_config.json").read_text())[
        "shift"] == 1.0
    assert not list(Path(settings.checkpoint_configs / "flux").rglob("*.safetensors*"))


@pytest.mark.slow
def test_an_sd3_file_runs_without_t5(folders, tiny, engine):
    """SD3 runs on its two CLIPs alone (as sd3_medium_incl_clips does) when no T5 fits."""
    spec = engine.registry.get("sd3-medium")
    parts = {part: path for part, path in spec.parts if part != "t5xxl"}
    pipe = dit_files.load_pipeline(spec.source, "sd3", spec.config, parts, torch.float32)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    images = [pipe(prompt="a red circle", num_inference_steps=2, width=64, height=64, output_type="np",
                   generator=torch.Generator().manual_seed(seed)).images[0] for seed in (1, 1, 2)]
    assert np.array_equal(images[0], images[1]) and not np.array_equal(images[0], images[2])


@pytest.mark.slow
def test_a_real_width_flux_file_loads_with_the_shipped_config(tmp_path):
    """FLUX.1's real widths (3072 wide, 24 heads of 128, T5 4096, CLIP-L 768), one double and one single block
    (~0.5 B parameters, bf16): written in BFL's layout, detected, loaded with the shipped config folder, and the same
    output as the module it was written from."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24, in_channels=64,
        joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56],
    ).to(torch.bfloat16).eval()
    path = tmp_path / "flux1-dev-2blocks.safetensors"
    save_file({k: v.contiguous() for k, v in dit_keys.to_original("flux", model.state_dict()).items()}, str(path))
    found = dit_files.scan_transformers([tmp_path]).checkpoints
    assert [(c.name, c.label) for c in found] == [("flux1-dev-2blocks", "FLUX.1 dev")]
    config = str(config_dir(Settings(cache_dir=tmp_path / "cache"), "flux"))
    loaded = dit_files.load_transformer(path, "flux", config, torch.bfloat16).eval()
    assert (loaded.config.num_layers, loaded.config.num_single_layers) == (1, 1)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16),
        encoder_hidden_states=torch.randn(1, 8, 4096, dtype=torch.bfloat16),
        pooled_projections=torch.randn(1, 768, dtype=torch.bfloat16),
        timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
        img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3),
    )
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).sample, model(**inputs).sample)


def test_scaled_fp8_weights_are_multiplied_by_their_scale(tmp_path):
    """ComfyUI's scaled fp8 files keep weight / scale in fp8 beside the scale: read back, the product in float."""
    weight = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    save_file({"model.diffusion_model.a.weight": (weight / 4).to(FP8), "model.diffusion_model.a.scale_weight":
               torch.tensor(4.0), "model.diffusion_model.scaled_fp8": torch.zeros(0, dtype=FP8)},
              str(tmp_path / "scaled.safetensors"))
    state = dit_files.read_tensors(tmp_path / "scaled.safetensors", (dit_keys.PREFIX,), torch.float32)
    assert list(state) == ["a.weight"] and torch.equal(state["a.weight"], weight)


def test_the_vae_menu_swaps_a_flux_files_vae(engine, references):
    """The VAE menu works for single FLUX files as for SD: the SD3 VAE file (same shapes) decodes differently."""
    own = run(engine, "flux-dev")
    family = engine.registry.get("flux-dev").family
    request = Txt2ImgRequest(
        prompt="a red circle on a blue background", seed=7, steps=3, width=64, height=64, sampler="Euler",
        schedule="Automatic", model="flux-dev", guidance_scale=1.0 if family == "flux" else 4.5, vae="sd3_vae",
    )
    swapped = pixels(engine.run(request).images[0]).astype(np.int16)
    assert not np.array_equal(swapped, own)
    assert np.array_equal(run(engine, "flux-dev"), own)  # back to its own VAE (ae.safetensors)


def test_k_quant_gguf_weights_load_quantized_and_dequantize_like_gguf(tiny, folders, tmp_path):
    """Q4_K and Q5_K tensors (the tiny FLUX's 256-wide timestep and guidance inputs, the only K-quant-sized ones) stay
    quantized in the loaded transformer and dequantize to what the gguf package reads from the same bytes."""
    import gguf
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    kinds = {"time_in.in_layer.weight": gguf.GGMLQuantizationType.Q4_K,
             "guidance_in.in_layer.weight": gguf.GGMLQuantizationType.Q5_K}
    path = save_gguf(tiny["flux"], "flux", tmp_path / "flux-dev-Q4_K_M.gguf", k_quants=kinds)
    config = str(config_dir(Settings(cache_dir=tmp_path / "cache", checkpoint_configs=folders / "configs"), "flux"))
    model = dit_files.load_transformer(path, "flux", config, torch.float32)
    reader = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for name, module in (("time_in.in_layer.weight", model.time_text_embed.timestep_embedder.linear_1),
                         ("guidance_in.in_layer.weight", model.time_text_embed.guidance_embedder.linear_1)):
        assert module.weight.quant_type == kinds[name]
        expected = gguf.quants.dequantize(reader[name].data, kinds[name]).reshape(32, 256)
        # diffusers dequantizes in float16 (then casts): equal within a few fp16 steps of these ~0.2-sized weights.
        assert np.allclose(dequantize_gguf_tensor(module.weight).float().numpy(), expected, rtol=0, atol=5e-4)
    out = model(hidden_states=torch.randn(1, 16, 64), encoder_hidden_states=torch.randn(1, 8, 32),
                pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
                img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3)).sample
    assert out.shape == (1, 16, 64) and torch.isfinite(out).all()
