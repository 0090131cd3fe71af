"""The offline tiny FLUX, FLUX Fill, SD3 and Chroma models and the FLUX/SD3 ControlNets: transformer (DiT)
pipelines built from configs with random weights.

Like ``backend.models.tiny`` (the tiny SD 1.x model) they have the real structure at a size that runs in well under
a second on a CPU: FLUX's ``FluxTransformer2DModel`` with guidance embedding (a "dev"-like, guidance-distilled
model), CLIP and T5 text encoders and a 16-channel VAE; SD3's ``SD3Transformer2DModel`` with two CLIP encoders with
projection, a T5 encoder and a 16-channel VAE; Chroma's ``ChromaTransformer2DModel`` (FLUX without CLIP, its
modulation from the small "approximator" network) with one T5 encoder and FLUX's VAE layout; all with their
flow-matching schedulers. They are saved in diffusers layout and loaded back through the same ``from_pretrained``
code as a real model. The ControlNets (``FluxControlNetModel``, ``SD3ControlNetModel``) match the tiny transformers.
The component sizes follow diffusers' own test components (``get_dummy_components`` of its FLUX, SD3 and Chroma
pipeline tests).

Tokenizers: the CLIP ones are the tiny model's byte-level BPE (``tiny.build_tokenizer``); the T5 one is the real T5
tokenizer the project ships (``backend/configs/t5``), so prompts tokenize exactly as on a real model. Its 32,100
entries make the tiny T5 encoder's embedding table the largest weight (about 1 M numbers at width 32): still tiny.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from backend.models.tiny import TINY_SEED, build_text_encoder, build_tokenizer

LATENT_CHANNELS = 16  # as the real FLUX and SD3 VAEs (so the families' preview colours apply)
# The tiny FLUX transformer's blocks; its ControlNet must match them (the same widths, heads and RoPE axes).
FLUX_BLOCKS = dict(
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=[4, 4, 8],
)
T5_TOKENIZER = Path(__file__).resolve().parent.parent / "configs" / "t5"


def build_t5_tokenizer():
    """The real T5 tokenizer shipped with the project (T5 v1.1's SentencePiece vocabulary)."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(T5_TOKENIZER))


def build_t5_encoder(tokenizer, width: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def _vae():
    from diffusers import AutoencoderKL

    # One block: a scale factor of 1 (FLUX packs 2×2 latent patches, so a 64² picture is 32×32 tokens… of 2×2).
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
        sample_size=64,
    )


# FluxFillPipeline packs beside the latents the masked picture's latents and the mask at full picture resolution:
# each 2×2 latent patch carries (2 · VAE scale)² mask pixels. The tiny VAE scales by 2 (FLUX.1 Fill dev's by 8:
# 64 + 64 + 256 = 384 channels).
FILL_IN_CHANNELS = 2 * LATENT_CHANNELS * 4 + (2 * 2) ** 2


def build_flux(seed: int = TINY_SEED, fill: bool = False):
    """A tiny guidance-distilled FLUX pipeline (FLUX.1 dev's structure; ``fill``: FLUX.1 Fill dev's, saved as its
    hub copy is, a FluxFillPipeline)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxPipeline, FluxTransformer2DModel

    tokenizer, tokenizer_2 = build_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=FILL_IN_CHANNELS if fill else LATENT_CHANNELS * 4,  # 2×2 packed latent patches (and more)
        out_channels=LATENT_CHANNELS * 4,
        **FLUX_BLOCKS,
    )
    text_encoder = build_text_encoder(tokenizer, 32)
    text_encoder_2 = build_t5_encoder(tokenizer_2, 32)
    vae = _vae()
    # FLUX.1's scheduler config: shift 3 with resolution-dependent (dynamic) shifting.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return (FluxFillPipeline if fill else FluxPipeline)(
        transformer=transformer,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        vae=vae,
        scheduler=scheduler,
    )


def build_sd3(seed: int = TINY_SEED):
    """A tiny SD3 pipeline (SD 3.5 Medium/Large's structure: MMDiT, two CLIPs and T5)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_3 = build_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,  # the last block takes no ControlNet residual (its text stream ends there): one more does
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,  # the T5 width; the two CLIPs' 32 + 32 are padded to it
        pooled_projection_dim=64,  # the two CLIP projections, concatenated
        pos_embed_max_size=64,
    )
    text_encoder = build_text_encoder(tokenizer, 32, projection=True)
    text_encoder_2 = build_text_encoder(tokenizer, 32, projection=True)
    text_encoder_3 = build_t5_encoder(tokenizer_3, 64)
    vae = _vae()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD 3.5's scheduler config
    return StableDiffusion3Pipeline(
        transformer=transformer,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        text_encoder_3=text_encoder_3,
        tokenizer=tokenizer,
        tokenizer_2=build_tokenizer(),
        tokenizer_3=tokenizer_3,
        vae=vae,
        scheduler=scheduler,
    )


def build_chroma(seed: int = TINY_SEED):
    """A tiny Chroma pipeline (Chroma1's structure: FLUX's double and single blocks, one T5 encoder, real CFG)."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2×2 packed latent patches, as FLUX
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the T5 width
        axes_dims_rope=[4, 4, 8],
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )
    text_encoder = build_t5_encoder(tokenizer, 32)
    # Chroma's scheduler config (backend/configs/chroma): FLUX.1 schnell's, shift 1 without dynamic shifting.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return ChromaPipeline(
        transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, vae=_vae(), scheduler=scheduler
    )


def _randomise(layers: list[torch.nn.Module], seed: int, scale: float) -> None:
    """diffusers zero-initialises a new ControlNet's input and output layers (a no-op until trained): seeded random
    weights there make every control map steer the picture, as a trained ControlNet does."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale)


def build_flux_controlnet(seed: int):
    """A ControlNet for the tiny FLUX (InstantX's FLUX.1 ControlNet structure: one double, one single block)."""
    from diffusers import FluxControlNetModel

    torch.manual_seed(TINY_SEED)
    controlnet = FluxControlNetModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,
        **FLUX_BLOCKS,
    )
    layers = [controlnet.controlnet_x_embedder, *controlnet.controlnet_blocks, *controlnet.controlnet_single_blocks]
    _randomise(layers, seed, 0.3)
    return controlnet


def build_sd3_controlnet(seed: int):
    """A ControlNet for the tiny SD3 (one MMDiT block; its residual goes to the transformer's one block)."""
    from diffusers import SD3ControlNetModel

    torch.manual_seed(TINY_SEED)
    controlnet = SD3ControlNetModel(
        sample_size=32,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        pos_embed_max_size=64,
    )
    _randomise([controlnet.pos_embed_input.proj, *controlnet.controlnet_blocks], seed, 0.3)
    return controlnet


BUILDERS = {"flux": build_flux, "sd3": build_sd3, "chroma": build_chroma,
            "flux-fill": lambda seed: build_flux(seed, fill=True)}
CONTROLNET_BUILDERS = {"flux": build_flux_controlnet, "sd3": build_sd3_controlnet}


def _write(path: Path, marker: str, build) -> Path:
    """Save ``build()`` at ``path`` atomically (a half-written folder never looks complete)."""
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    build().save_pretrained(tmp, safe_serialization=True)
    (tmp / "sd_studio.json").write_text(marker)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def ensure(path: Path, kind: str, seed: int = TINY_SEED) -> Path:
    """The saved tiny ``kind`` (a ``BUILDERS`` key) model at ``path``, built and written if missing."""
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    marker = json.dumps({"builder": "backend.models.tiny_dit", "kind": kind, "seed": seed})
    return _write(path, marker, lambda: BUILDERS[kind](seed))


def ensure_controlnet(path: Path, kind: str, seed: int) -> Path:
    """The saved tiny ControlNet for the ``kind`` ("flux" or "sd3") model at ``path``, built if missing."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    marker = json.dumps({"builder": "backend.models.tiny_dit", "controlnet": kind, "seed": seed})
    return _write(path, marker, lambda: CONTROLNET_BUILDERS[kind](seed))


# The built-in names (``builtin:<name>`` in presets/models.json) → how to build each into a folder.
BUILTINS = {
    "tiny-flux": lambda path: ensure(path, "flux"),
    "tiny-flux-fill": lambda path: ensure(path, "flux-fill"),
    "tiny-sd3": lambda path: ensure(path, "sd3"),
    "tiny-chroma": lambda path: ensure(path, "chroma"),
    "tiny-flux-controlnet-canny": lambda path: ensure_controlnet(path, "flux", seed=1),
    "tiny-flux-controlnet-depth": lambda path: ensure_controlnet(path, "flux", seed=2),
    "tiny-sd3-controlnet-canny": lambda path: ensure_controlnet(path, "sd3", seed=1),
    "tiny-sd3-controlnet-depth": lambda path: ensure_controlnet(path, "sd3", seed=2),
}
