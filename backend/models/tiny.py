"""The offline tiny model: an SD-1.x-structured pipeline built from configs, no download needed.

It has the real structure (UNet2DConditionModel with cross-attention, AutoencoderKL, CLIPTextModel,
a byte-level BPE CLIPTokenizer) at a size that runs in a fraction of a second on a CPU. It is saved in
diffusers layout and loaded back through the same ``from_pretrained`` code as any real model, so the
tests exercise the loading path users hit. Its weights are random: it proves plumbing, not pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_SEED = 0
TINY_RESOLUTION = 64
# Words that become single BPE tokens; anything else still tokenizes, byte by byte.
VOCABULARY_WORDS = (
    "a an the on of in with and at to background picture photo image "
    "red green blue yellow orange purple pink white black gray grey brown cyan magenta "
    "circle square triangle star ring cross diamond heart rectangle "
    "small large big tiny huge left right top bottom center middle "
    "blurry lowres bad ugly dark bright"
).split()
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-to-printable-character table (the base alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tokenizer_vocab(
    words: tuple[str, ...] | list[str] = VOCABULARY_WORDS,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style vocab and merge list: the byte alphabet plus one merge chain per word."""
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = (current, piece)
            current = current + piece
            if merge not in merges:
                merges.append(merge)
                tokens.append(current)
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def build_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_text_encoder(tokenizer, width: int, *, projection: bool = False):
    """A small CLIP text encoder (2 layers, 4 heads) for ``tokenizer``'s vocabulary, ``width`` wide; ``projection``:
    with its text projection (SDXL's second and SD3's encoders)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # transformers 5 defaults bos/eos to the real CLIP ids (49406/49407): point them at our vocab.
    config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=width,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_components(seed: int = TINY_SEED, *, unet_in_channels: int = 4) -> dict[str, object]:
    """Random-weight components of a tiny SD 1.x pipeline (deterministic for a seed)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=unet_in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=TINY_RESOLUTION,
    )
    text_encoder = build_text_encoder(tokenizer, width=32)
    # SD 1.x's scheduler config: scaled-linear betas over 1000 training steps.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_pipeline(seed: int = TINY_SEED, *, inpaint: bool = False):
    """A tiny StableDiffusion pipeline; ``inpaint=True`` gives the 9-channel inpainting UNet."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    components = build_components(seed, unet_in_channels=9 if inpaint else 4)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    return cls(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save(path: Path, seed: int = TINY_SEED, *, inpaint: bool = False) -> Path:
    """Build the tiny model and write it in diffusers layout (safetensors), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    build_pipeline(seed, inpaint=inpaint).save_pretrained(tmp, safe_serialization=True)
    marker = {"builder": "backend.models.tiny", "seed": seed, "inpaint": inpaint}
    (tmp / "sd_studio.json").write_text(json.dumps(marker))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)
    return path


def build_controlnet(seed: int):
    """A ControlNet made from the tiny UNet (``from_unet``), its conditioning embedding downsampling 2× like
    the tiny VAE. ``from_unet`` zero-initialises the output convolutions, which would make the ControlNet a
    no-op; random weights (seeded) there make every control map steer the result, as a trained one does."""
    from diffusers import ControlNetModel

    unet = build_components(TINY_SEED)["unet"]
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    generator = torch.Generator().manual_seed(seed)
    # Scales picked so that different maps give clearly different pictures (a mean pixel change of a few levels).
    scaled = [(controlnet.controlnet_cond_embedding.conv_out, 1.0)]
    scaled += [(conv, 0.1) for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]]
    with torch.no_grad():
        for conv, scale in scaled:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * scale)
    return controlnet


def save_controlnet(path: Path, seed: int) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    build_controlnet(seed).save_pretrained(tmp, safe_serialization=True)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)
    return path


def ensure_controlnet(path: Path, seed: int) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        save_controlnet(path, seed)
    return path


def ensure(path: Path, seed: int = TINY_SEED, *, inpaint: bool = False) -> Path:
    """Return the saved tiny model at ``path``, building it first if it is not there yet."""
    path = Path(path)
    if not (path / "model_index.json").exists():
        save(path, seed, inpaint=inpaint)
    return path


# IP-Adapter (issue #29): a tiny CLIP vision encoder and a random adapter in the ip-adapter_sd15 layout, for tests.
TINY_IMAGE_EMBED = 16  # the tiny encoder's projection size: the adapter's image_proj input
IP_TOKENS = 4  # ImageProjection's tokens per picture (what diffusers infers from ``image_proj.proj.weight``)


def save_image_encoder(path: Path, seed: int = 5) -> Path:
    """A random ``CLIPVisionModelWithProjection`` (32-pixel pictures) with its image processor, in ``path``."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=TINY_IMAGE_EMBED)
    CLIPVisionModelWithProjection(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)


def ip_adapter_state(unet, seed: int = 6, image_embed: int = TINY_IMAGE_EMBED) -> dict[str, torch.Tensor]:
    """A random adapter for ``unet`` under the keys of ``ip-adapter_sd15.safetensors``: ``image_proj.*`` (diffusers'
    ImageProjection) and ``ip_adapter.<n>.to_k_ip/to_v_ip.weight``, n = 1, 3, 5… over the cross-attention layers."""
    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(cross * IP_TOKENS, image_embed, generator=generator) * 0.5,
        "image_proj.proj.bias": torch.zeros(cross * IP_TOKENS),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        to_k = unet.get_submodule(name.removesuffix(".processor")).to_k.weight
        for part in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(to_k.shape, generator=generator) * 0.5
        key_id += 2
    return state


def save_ip_adapter(path: Path, unet, seed: int = 6) -> Path:
    """``ip_adapter_state`` saved as one .safetensors file at ``path``."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ip_adapter_state(unet, seed).items()}, str(path))
    return Path(path)
