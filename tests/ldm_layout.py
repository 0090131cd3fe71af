"""Test helper: write a diffusers SD 1.x pipeline as an original single-file checkpoint (the A1111/ComfyUI layout).

It inverts diffusers' own single-file conversion (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``) for any block count and ``layers_per_block``, so tiny test models can be saved the
way real checkpoints are and then go through the app's real loading path. ``test_checkpoints`` checks the round trip.
"""

from __future__ import annotations

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


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The original single-file state dict of an SD 1.x pipeline (UNet, VAE, CLIP text encoder)."""
    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    # transformers 5.6+ flattened CLIPTextModel; the original layout keeps its ``text_model.`` level.
    encoder = pipe.text_encoder.state_dict()
    clip = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in encoder.items()}
    state.update({CLIP_PREFIX + k: v for k, v in clip.items()})
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
