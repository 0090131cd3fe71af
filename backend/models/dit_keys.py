"""FLUX, SD3 and Chroma transformer files in their original key layout (BFL's ``double_blocks.*``, SAI's
``joint_blocks.*``; Chroma is FLUX's layout without the modulation linears, plus its ``distilled_guidance_layer``).

One table per family maps the original names to diffusers' names, both ways: ``to_diffusers`` reads a file's
tensors (plain, fp8-upcast or GGUF-quantized) into a diffusers state dict, ``to_original`` writes one (tests build
single files from the tiny models with it). diffusers' own FLUX and Chroma converters hard-code FLUX.1's inner width
3072 when they split a single block's fused ``linear1``; here every split reads the width from the file, so
fine-tunes of other sizes and the tiny test models load too. ``identify`` names the variant and
``transformer_config`` derives the transformer's config (blocks, widths, guidance embedding, qk-norm, dual
attention, Chroma's approximator) from the tensor shapes alone, so one shipped config folder per family serves every
variant. Pure functions of names and shapes: no file access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

PREFIX = "model.diffusion_model."  # all-in-one ComfyUI / Forge checkpoints keep the transformer under this prefix
FAMILIES = ("flux", "sd3", "chroma")

# (kind, original name, diffusers name(s)). kind: "r" rename, "s" scale/shift halves swapped (the original
# AdaLayerNorm output is shift, scale; diffusers' is scale, shift), "c" swapped only when the tensor has 2×width
# rows (SD3's last, context-only block), "f" fused in the original (q, k, v[, mlp]) along dim 0.
Table = Sequence[tuple[str, str, Any]]

FLUX_TOP: Table = (
    ("r", "time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
    ("r", "time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
    ("r", "vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    ("r", "vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    ("r", "guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
    ("r", "guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
    ("r", "txt_in", "context_embedder"),
    ("r", "img_in", "x_embedder"),
    ("r", "final_layer.linear", "proj_out"),
    ("s", "final_layer.adaLN_modulation.1", "norm_out.linear"),
)
FLUX_DOUBLE: Table = (
    ("r", "img_mod.lin", "norm1.linear"),
    ("r", "txt_mod.lin", "norm1_context.linear"),
    ("f", "img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
    ("f", "txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
    ("r", "img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
    ("r", "img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    ("r", "txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    ("r", "txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
    ("r", "img_mlp.0", "ff.net.0.proj"),
    ("r", "img_mlp.2", "ff.net.2"),
    ("r", "txt_mlp.0", "ff_context.net.0.proj"),
    ("r", "txt_mlp.2", "ff_context.net.2"),
    ("r", "img_attn.proj", "attn.to_out.0"),
    ("r", "txt_attn.proj", "attn.to_add_out"),
)
FLUX_SINGLE: Table = (
    ("r", "modulation.lin", "norm.linear"),
    ("f", "linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),
    ("r", "norm.query_norm.scale", "attn.norm_q.weight"),
    ("r", "norm.key_norm.scale", "attn.norm_k.weight"),
    ("r", "linear2", "proj_out"),
)
# Chroma: FLUX without the time / pooled-text / guidance embedders and per-block modulation linears (its
# "approximator", distilled_guidance_layer, computes every block's modulation from the timestep).
APPROXIMATOR = "distilled_guidance_layer."
CHROMA_TOP: Table = (
    ("r", APPROXIMATOR + "in_proj", APPROXIMATOR + "in_proj"),
    ("r", APPROXIMATOR + "out_proj", APPROXIMATOR + "out_proj"),
    ("r", "txt_in", "context_embedder"),
    ("r", "img_in", "x_embedder"),
    ("r", "final_layer.linear", "proj_out"),
)
CHROMA_APPROXIMATOR: Table = (("r", "in_layer", "linear_1"), ("r", "out_layer", "linear_2"))
CHROMA_NORMS: Table = (("r", "scale", "weight"),)
SD3_TOP: Table = (
    ("r", "pos_embed", "pos_embed.pos_embed"),
    ("r", "x_embedder.proj", "pos_embed.proj"),
    ("r", "t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
    ("r", "t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
    ("r", "y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
    ("r", "y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
    ("r", "context_embedder", "context_embedder"),
    ("r", "final_layer.linear", "proj_out"),
    ("s", "final_layer.adaLN_modulation.1", "norm_out.linear"),
)
SD3_JOINT: Table = (
    ("f", "x_block.attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
    ("f", "context_block.attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
    ("f", "x_block.attn2.qkv", ("attn2.to_q", "attn2.to_k", "attn2.to_v")),
    ("r", "x_block.attn.ln_q", "attn.norm_q"),
    ("r", "x_block.attn.ln_k", "attn.norm_k"),
    ("r", "context_block.attn.ln_q", "attn.norm_added_q"),
    ("r", "context_block.attn.ln_k", "attn.norm_added_k"),
    ("r", "x_block.attn2.ln_q", "attn2.norm_q"),
    ("r", "x_block.attn2.ln_k", "attn2.norm_k"),
    ("r", "x_block.attn.proj", "attn.to_out.0"),
    ("r", "context_block.attn.proj", "attn.to_add_out"),
    ("r", "x_block.attn2.proj", "attn2.to_out.0"),
    ("r", "x_block.adaLN_modulation.1", "norm1.linear"),
    ("c", "context_block.adaLN_modulation.1", "norm1_context.linear"),
    ("r", "x_block.mlp.fc1", "ff.net.0.proj"),
    ("r", "x_block.mlp.fc2", "ff.net.2"),
    ("r", "context_block.mlp.fc1", "ff_context.net.0.proj"),
    ("r", "context_block.mlp.fc2", "ff_context.net.2"),
)
# family → (top-level table, [(original block prefix, diffusers block prefix, block table)])
LAYOUTS: dict[str, tuple[Table, list[tuple[str, str, Table]]]] = {
    "flux": (FLUX_TOP, [("double_blocks.", "transformer_blocks.", FLUX_DOUBLE),
                        ("single_blocks.", "single_transformer_blocks.", FLUX_SINGLE)]),
    "sd3": (SD3_TOP, [("joint_blocks.", "transformer_blocks.", SD3_JOINT)]),
    # FLUX's block tables less their first entries, the modulation linears Chroma's blocks do not have.
    "chroma": (CHROMA_TOP, [("double_blocks.", "transformer_blocks.", FLUX_DOUBLE[2:]),
                            ("single_blocks.", "single_transformer_blocks.", FLUX_SINGLE[1:]),
                            (APPROXIMATOR + "layers.", APPROXIMATOR + "layers.", CHROMA_APPROXIMATOR),
                            (APPROXIMATOR + "norms.", APPROXIMATOR + "norms.", CHROMA_NORMS)]),
}
# A tensor every file of the family has (original names; Chroma's is besides FLUX's), and the one whose rows are the
# inner width.
MARKERS = {"flux": "double_blocks.0.img_attn.qkv.weight", "sd3": "joint_blocks.0.x_block.attn.qkv.weight",
           "chroma": "distilled_guidance_layer.in_proj.weight"}
WIDTH_KEYS = {
    "flux": ("img_in.weight", "x_embedder.weight"),
    "sd3": ("x_embedder.proj.weight", "pos_embed.proj.weight"),
    "chroma": ("img_in.weight", "x_embedder.weight"),
}


def strip_prefix(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """The transformer's tensors of a file: an all-in-one checkpoint's ``model.diffusion_model.*``, else all."""
    if any(key.startswith(PREFIX) for key in shapes):
        return {key[len(PREFIX):]: value for key, value in shapes.items() if key.startswith(PREFIX)}
    return dict(shapes)


def family_of(keys: Mapping[str, Any]) -> str | None:
    """``flux``, ``sd3`` or ``chroma`` when the (prefix-stripped) tensor names are an original-layout transformer."""
    found = next((name for name in ("flux", "sd3") if MARKERS[name] in keys), None)
    return "chroma" if found == "flux" and MARKERS["chroma"] in keys else found


def width(family: str, shapes: Mapping[str, Any]) -> int:
    """The transformer's inner width (hidden size), from the patch embedding's rows (either layout)."""
    key = next(k for k in WIDTH_KEYS[family] if k in shapes)
    return int(shapes[key].shape[0] if hasattr(shapes[key], "shape") else shapes[key][0])


def _rows(shape: Any) -> int:
    return int(tuple(shape.shape if hasattr(shape, "shape") else shape)[0])


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _split(tensor: torch.Tensor, inner: int, parts: int) -> list[torch.Tensor]:
    """q, k, v (each ``inner`` rows) and, for FLUX's single blocks, the MLP input (the remaining rows)."""
    sizes = [inner] * (parts - 1) + [tensor.shape[0] - inner * (parts - 1)]
    return list(torch.split(tensor, sizes, dim=0))


def _scope(key: str, blocks: list[tuple[str, str, Table]], original: bool) -> tuple[str, str, str, Table] | None:
    """(source block prefix with index, target prefix with index, rest of the key, table) of a block key."""
    for orig, diff, table in blocks:
        source, target = (orig, diff) if original else (diff, orig)
        if key.startswith(source):
            index, _, rest = key[len(source):].partition(".")
            return source + index + ".", target + index + ".", rest, table
    return None


def _match(rest: str, name: str) -> str | None:
    """The tail of ``rest`` after ``name`` (``.weight``, ``.bias`` or ``""``), None when it is not ``name``."""
    if rest == name:
        return ""
    return rest[len(name):] if rest.startswith(name + ".") else None


def to_diffusers(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The diffusers state dict of an original-layout transformer (prefix already stripped)."""
    top, blocks = LAYOUTS[family]
    inner = width(family, state)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        scope = _scope(key, blocks, original=True)
        _, target, rest, table = scope if scope else ("", "", key, top)
        for kind, name, new in table:
            tail = _match(rest, name)
            if tail is None:
                continue
            if kind == "f":
                for part, piece in zip(new, _split(tensor, inner, len(new)), strict=True):
                    out[target + part + tail] = piece
            else:
                swap = kind == "s" or (kind == "c" and _rows(tensor) == 2 * inner)
                out[target + new + tail] = _swap(tensor) if swap else tensor
            break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"tensors a {family} transformer does not have: {', '.join(unknown[:5])}")
    return out


def to_original(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original-layout state dict of a diffusers transformer (the inverse of ``to_diffusers``)."""
    top, blocks = LAYOUTS[family]
    inner = width(family, state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        scope = _scope(key, blocks, original=False)
        source, target, rest, table = scope if scope else ("", "", key, top)
        for kind, name, new in table:
            if kind == "f":
                tail = _match(rest, new[0])
                if tail is not None:  # the first part gathers the others
                    out[target + name + tail] = torch.cat([state[source + part + tail] for part in new], dim=0)
                    break
                if any(_match(rest, part) is not None for part in new[1:]):
                    break
                continue
            tail = _match(rest, new)
            if tail is not None:
                swap = kind == "s" or (kind == "c" and _rows(tensor) == 2 * inner)
                out[target + name + tail] = _swap(tensor) if swap else tensor
                break
        else:
            raise KeyError(f"{key}: no original name for this {family} tensor")
    return out


def _blocks(keys: Mapping[str, Any], prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)})


def is_fill_channels(in_channels: int, out_channels: int | None) -> bool:
    """Whether a FLUX transformer with these channels is a Fill one (``backend.models.flux_fill``; None out: as in).

    Fill's input is latents + masked-picture latents + the mask, more than twice its output (384 against 64 for
    FLUX.1 Fill dev); Depth/Canny's is latents + control latents, exactly twice."""
    return in_channels > 2 * (out_channels or in_channels)


def identify(shapes: Mapping[str, Any]) -> tuple[str, str] | None:
    """(diffusers model type, label) of an original-layout FLUX/SD3/Chroma transformer (prefix-stripped names)."""
    family = family_of(shapes)
    if family == "chroma":  # Chroma1-HD, -Base, chroma-unlocked-v*; Radiance works on pixels (no img_in patches)
        return ("chroma", "Chroma") if "img_in.weight" in shapes else ("chroma-radiance", "Chroma Radiance")
    if family == "flux":
        in_ch, out_ch = tuple(shapes["img_in.weight"].shape)[1], tuple(shapes["final_layer.linear.weight"].shape)[0]
        if is_fill_channels(in_ch, out_ch):  # the mask and the masked picture's latents beside the latents
            return "flux-fill", "FLUX.1 Fill"
        if in_ch != out_ch:  # Depth / Canny: the control picture's latents beside the latents
            return "flux-control", f"FLUX.1 Depth/Canny ({in_ch} input channels)"
        if "guidance_in.in_layer.weight" in shapes:
            return "flux-dev", "FLUX.1 dev"
        return "flux-schnell", "FLUX.1 schnell"
    if family == "sd3":
        if any(".attn2." in k for k in shapes):
            return "sd35_medium", "SD 3.5 Medium"
        if any(".ln_q." in k for k in shapes):
            return "sd35_large", "SD 3.5 Large"
        return "sd3", "SD3 Medium"
    return None


def transformer_config(family: str, shapes: Mapping[str, Any], head_dim: int) -> dict[str, Any]:
    """Config values read from the original-layout shapes; ``head_dim``: the config folder's, used where no
    qk-norm weight states it (SD3 Medium)."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(shapes[key].shape)

    inner = width(family, shapes)
    if family == "chroma":
        return _chroma_config(shapes, inner)
    if family == "flux":
        head = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
        return {
            "num_layers": len(_blocks(shapes, "double_blocks.")),
            "num_single_layers": len(_blocks(shapes, "single_blocks.")),
            "in_channels": shape("img_in.weight")[1],
            "out_channels": shape("final_layer.linear.weight")[0],
            "attention_head_dim": head,
            "num_attention_heads": inner // head,
            "joint_attention_dim": shape("txt_in.weight")[1],
            "pooled_projection_dim": shape("vector_in.in_layer.weight")[1],
            "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        }
    qk_norm = "joint_blocks.0.x_block.attn.ln_q.weight" in shapes
    head = shape("joint_blocks.0.x_block.attn.ln_q.weight")[0] if qk_norm else head_dim
    patch = shape("x_embedder.proj.weight")[2]
    dual = tuple(i for i in _blocks(shapes, "joint_blocks.") if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes)
    return {
        "num_layers": len(_blocks(shapes, "joint_blocks.")),
        "patch_size": patch,
        "in_channels": shape("x_embedder.proj.weight")[1],
        "out_channels": shape("final_layer.linear.weight")[0] // (patch * patch),
        "attention_head_dim": head,
        "num_attention_heads": inner // head,
        "caption_projection_dim": shape("context_embedder.weight")[0],
        "joint_attention_dim": shape("context_embedder.weight")[1],
        "pooled_projection_dim": shape("y_embedder.mlp.0.weight")[1],
        "pos_embed_max_size": round(shape("pos_embed")[1] ** 0.5),
        "qk_norm": "rms_norm" if qk_norm else None,
        "dual_attention_layers": dual,
    }


def _chroma_config(shapes: Mapping[str, Any], inner: int) -> dict[str, Any]:
    """ChromaTransformer2DModel's config from the shapes; the RoPE axes come from the config folder."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(shapes[key].shape)

    head = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    return {
        "num_layers": len(_blocks(shapes, "double_blocks.")),
        "num_single_layers": len(_blocks(shapes, "single_blocks.")),
        "in_channels": shape("img_in.weight")[1],
        "out_channels": shape("final_layer.linear.weight")[0],
        "attention_head_dim": head,
        "num_attention_heads": inner // head,
        "joint_attention_dim": shape("txt_in.weight")[1],
        "approximator_num_channels": shape("distilled_guidance_layer.in_proj.weight")[1],
        "approximator_hidden_dim": shape("distilled_guidance_layer.in_proj.weight")[0],
        "approximator_layers": len(_blocks(shapes, "distilled_guidance_layer.layers.")),
    }
