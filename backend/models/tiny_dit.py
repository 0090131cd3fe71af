"""The offline tiny FLUX and SD3 models: transformer (DiT) pipelines built from configs with random weights.

Like ``backend.models.tiny`` (the tiny SD 1.x model) they have the real structure at a size that runs in well under
a second on a CPU: FLUX's ``FluxTransformer2DModel`` with guidance embedding (a "dev"-like, guidance-distilled
model), CLIP and T5 text encoders and a 16-channel VAE; SD3's ``SD3Transformer2DModel`` with two CLIP encoders with
projection, a T5 encoder and a 16-channel VAE; both with their flow-matching schedulers. They are saved in diffusers
layout and loaded back through the same ``from_pretrained`` code as a real model. The component sizes follow
diffusers' own test components (``get_dummy_components`` of its FLUX and SD3 pipeline tests).

Tokenizers: the CLIP ones are the tiny model's byte-level BPE (``tiny.build_tokenizer``). No T5 SentencePiece file
ships with the project and there is no hub here, so the T5 tokenizer is built in code: a ``T5TokenizerFast`` over a
small ``tokenizers`` Unigram vocabulary (the tiny model's words, whole, and single characters). It tokenizes like
T5 (Metaspace pre-tokenizer, ``</s>`` at the end, ``<pad>`` padding) but is not T5's vocabulary: a real FLUX or SD3
model brings its own tokenizer files.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch

from backend.models.tiny import TINY_SEED, VOCABULARY_WORDS, build_text_encoder, build_tokenizer

LATENT_CHANNELS = 16  # as the real FLUX and SD3 VAEs (so the families' preview colours apply)


def build_t5_tokenizer():
    """A T5TokenizerFast over a small Unigram vocabulary built here (no SentencePiece file, see the module doc)."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + word, -1.0) for word in VOCABULARY_WORDS]
    vocab += [("▁", -3.0)] + [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


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


def build_flux(seed: int = TINY_SEED):
    """A tiny guidance-distilled FLUX pipeline (FLUX.1 dev's structure)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, tokenizer_2 = build_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2×2 packed latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    text_encoder = build_text_encoder(tokenizer, 32)
    text_encoder_2 = build_t5_encoder(tokenizer_2, 32)
    vae = _vae()
    # FLUX.1's scheduler config: shift 3 with resolution-dependent (dynamic) shifting.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
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
        num_layers=1,
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


BUILDERS = {"flux": build_flux, "sd3": build_sd3}


def ensure(path: Path, kind: str, seed: int = TINY_SEED) -> Path:
    """The saved tiny ``kind`` ("flux" or "sd3") model at ``path``, built and written atomically if missing."""
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    BUILDERS[kind](seed).save_pretrained(tmp, safe_serialization=True)
    (tmp / "sd_studio.json").write_text(json.dumps({"builder": "backend.models.tiny_dit", "kind": kind, "seed": seed}))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
