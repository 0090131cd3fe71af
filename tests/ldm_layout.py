"""Test helper: write a diffusers SD 1.x pipeline as an original single-file checkpoint (the A1111/ComfyUI layout).

It inverts diffusers' own single-file conversion (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``) for any block count and ``layers_per_block``, so tiny test models can be saved the
way real checkpoints are and then go through the app's real loading path. ``test_checkpoints`` checks the round trip.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    per = config["layers_per_block"] + 1  # ldm's input/output block slots per diffusers block
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        for old, ldm in _UNET_TOP.items():
            if key.startswith(old):
                new = ldm + key[len(old):]
        parts = key.split(".")
        if new is None and parts[0] == "down_blocks":
            block, kind = int(parts[1]), parts[2]
            rest = ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{per * block + int(parts[3]) + 1}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{per * block + int(parts[3]) + 1}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{per * (block + 1)}.0.op.{'.'.join(parts[5:])}"
        elif new is None and parts[0] == "up_blocks":
            block, kind = int(parts[1]), parts[2]
            rest = ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{per * block + int(parts[3])}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{per * block + int(parts[3])}.1.{rest}"
            else:  # upsamplers.0.conv.*: after the attention when the block has one
                slot = 2 if up_has_attention[block] else 1
                new = f"output_blocks.{per * block + per - 1}.{slot}.{rest}"
        elif new is None and parts[0] == "mid_block":
            index, rest = int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index}.{_resnet(rest)}" if parts[1] == "resnets" else f"middle_block.1.{rest}"
        elif new is None and parts[0] == "add_embedding":
            new = f"label_emb.0.{0 if parts[1] == 'linear_1' else 2}.{parts[2]}"
        if new is None:
            raise KeyError(f"no ldm name for unet key {key}")
        out[UNET_PREFIX + new] = value
    return out


_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    blocks = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                new = f"{parts[0]}.down.{i}.block.{'.'.join(parts[4:])}"
            else:
                new = f"{parts[0]}.down.{i}.downsample.{'.'.join(parts[5:])}"
        elif parts[1] == "up_blocks":
            i = blocks - 1 - int(parts[2])
            if parts[3] == "resnets":
                new = f"{parts[0]}.up.{i}.block.{'.'.join(parts[4:])}"
            else:
                new = f"{parts[0]}.up.{i}.upsample.{'.'.join(parts[5:])}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block":  # attentions.0.<layer>: 1x1 convolutions in the original
            layer = ".".join(parts[4:-1])
            new = f"{parts[0]}.mid.attn_1.{_VAE_ATTENTION[layer]}.{parts[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def _hf_clip(encoder) -> dict[str, torch.Tensor]:
    # transformers 5.6+ flattened CLIPTextModel; the original layout keeps its ``text_model.`` level.
    return {
        k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
        for k, v in encoder.state_dict().items()
    }


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
              "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(encoder, prefix: str) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower (SD 2.x, SDXL's second encoder): q/k/v joined into in_proj, projection transposed."""
    state = _hf_clip(encoder)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "text_model.embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T
        elif key.startswith("text_model.encoder.layers."):
            rest = key[len("text_model.encoder.layers."):]
            index, layer = rest.split(".", 1)
            match = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", layer)
            if match:
                qkv.setdefault(f"{index}.{match[2]}", {})[match[1]] = value
                continue
            for old, new in _OPEN_CLIP.items():
                layer = layer.replace(old, new)
            out[f"{prefix}transformer.resblocks.{index}.{layer}"] = value
        elif "position_ids" not in key:
            raise KeyError(f"no OpenCLIP name for {key}")
    for name, parts in qkv.items():
        index, kind = name.split(".")
        out[f"{prefix}transformer.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat([parts[c] for c in "qkv"])
    return out


def pipeline_to_ldm(pipe, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The original single-file state dict of an SD 1.x, SD 2.x or SDXL pipeline (UNet, VAE, text encoders);
    ``dtype`` casts every tensor (real checkpoints are often float16)."""
    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: CLIP ViT-L, then OpenCLIP bigG
        state.update({"conditioner.embedders.0.transformer." + k: v for k, v in _hf_clip(pipe.text_encoder).items()})
        state.update(open_clip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    elif pipe.text_encoder.config.hidden_size == 1024:  # SD 2.x: OpenCLIP ViT-H
        state.update(open_clip_to_ldm(pipe.text_encoder, "cond_stage_model.model."))
    else:
        state.update({CLIP_PREFIX + k: v for k, v in _hf_clip(pipe.text_encoder).items()})
    if dtype is not None:
        return {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def save_ldm_checkpoint(pipe, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(pipeline_to_ldm(pipe), str(path))
    return path


def save_config_folder(pipe, path: Path) -> Path:
    """The pipeline's configs and tokenizer without weights: what ``from_single_file(config=…)`` reads."""
    import shutil

    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    for weights in [*path.rglob("*.safetensors"), *path.rglob("*.bin")]:
        weights.unlink()
    shutil.rmtree(path / "safety_checker", ignore_errors=True)
    return path


def _text_encoder(tokenizer, width: int, layers: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=width,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32, sample_size=64,
    )


def build_sd2(seed: int, inpaint: bool = False):
    """A tiny SD 2.x-structured v-prediction pipeline: 1024-wide text encoder (what tells SD 2.x apart), linear
    projections, two layers per block (so ``input_blocks.2`` is the cross-attention the detection reads)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from backend.models import tiny

    torch.manual_seed(seed)
    tokenizer = tiny.build_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=9 if inpaint else 4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=1024, attention_head_dim=(2, 4),
        use_linear_projection=True, norm_num_groups=32,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    return StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=_text_encoder(tokenizer, 1024, 2), tokenizer=tokenizer,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl(seed: int):
    """A tiny SDXL-structured pipeline: two text encoders (the second with a projection and 10 layers, the
    layer the detection reads; a width of its own, as diffusers tells the two apart by it), size/crop
    conditioning (``text_time``), SDXL's block layout."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from backend.models import tiny

    torch.manual_seed(seed)
    tokenizer = tiny.build_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 + 48, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=48 + 6 * 8,
        transformer_layers_per_block=(1, 2),
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        unet=unet, vae=_vae(), text_encoder=_text_encoder(tokenizer, 32, 2),
        text_encoder_2=_text_encoder(tokenizer, 48, 10, projection=True), tokenizer=tokenizer, tokenizer_2=tokenizer,
        scheduler=scheduler,
    )


def save_random_sd15(config_folder: Path, path: Path) -> Path:
    """A random-weight checkpoint of the real SD 1.5 architecture (UNet 860M parameters), float16, single file."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    parts = SimpleNamespace(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_folder, subfolder="unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(config_folder, subfolder="vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(config_folder, subfolder="text_encoder")),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(pipeline_to_ldm(parts, torch.float16), str(path))
    return path
