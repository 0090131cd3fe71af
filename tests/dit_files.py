"""Single FLUX / SD3 / Chroma files written from the tiny models, in the layouts people download.

The transformer goes out in the original BFL / SAI / lodestones key names (``dit_keys.to_original``), the text
encoders as ComfyUI's ``clip_l`` / ``clip_g`` / ``t5xxl`` files (transformers' own names; Chroma has ``t5xxl``
alone), the VAE in the original layout (``ldm_layout.vae_to_ldm``): all-in-one (ComfyUI's prefixes),
transformer-only, fp8 (float8_e4m3fn weights) and GGUF (Q8_0 from ``gguf.quants``, small and 1-D tensors kept in F32
as city96's converter keeps them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from backend.models import dit_keys

from .ldm_layout import vae_to_ldm

# pipeline component → (ComfyUI part name, file name)
ENCODER_FILES = {
    "flux": {"text_encoder": ("clip_l", "clip_l.safetensors"), "text_encoder_2": ("t5xxl", "t5xxl_fp16.safetensors")},
    "sd3": {"text_encoder": ("clip_l", "clip_l.safetensors"), "text_encoder_2": ("clip_g", "clip_g.safetensors"),
            "text_encoder_3": ("t5xxl", "t5xxl_fp16.safetensors")},
    "chroma": {"text_encoder": ("t5xxl", "t5xxl_fp16.safetensors")},
}


def encoder_state(encoder) -> dict[str, torch.Tensor]:
    """A text encoder as ComfyUI's files have it: CLIP keeps its ``text_model.`` level (transformers 5.6+ flattened
    CLIPTextModel drops it), T5 as transformers names it."""
    state = encoder.state_dict()
    if "T5" in type(encoder).__name__:
        return state
    return {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v for k, v in state.items()}


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def transformer_state(pipe, family: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The transformer in the original layout; ``dtype`` (fp8) for its matrices, as fp8 releases store them."""
    state = dit_keys.to_original(family, pipe.transformer.state_dict())
    if dtype is not None:
        state = {k: v.to(dtype) if v.ndim == 2 else v for k, v in state.items()}
    return _contiguous(state)


def vae_state(pipe) -> dict[str, torch.Tensor]:
    ldm = vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config))
    return {k.removeprefix("first_stage_model."): v for k, v in ldm.items()}


def save_all_in_one(pipe, family: str, path: Path, dtype: torch.dtype | None = None) -> Path:
    """A ComfyUI / Forge checkpoint: transformer, text encoders and VAE in one file."""
    state = {dit_keys.PREFIX + k: v for k, v in transformer_state(pipe, family, dtype).items()}
    for component, (part, _) in ENCODER_FILES[family].items():
        prefix = f"text_encoders.{part}.transformer."
        state.update({prefix + k: v for k, v in encoder_state(getattr(pipe, component)).items()})
    state.update({"first_stage_model." + k: v for k, v in vae_state(pipe).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(state), str(path))
    return path


def save_transformer(pipe, family: str, path: Path, dtype: torch.dtype | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(transformer_state(pipe, family, dtype), str(path))
    return path


def save_parts(pipe, family: str, text_encoders: Path, vae: Path, vae_name: str) -> None:
    """The text encoders as ComfyUI's files in ``text_encoders`` and the VAE as ``vae/<vae_name>.safetensors``."""
    text_encoders.mkdir(parents=True, exist_ok=True)
    vae.mkdir(parents=True, exist_ok=True)
    for component, (_, name) in ENCODER_FILES[family].items():
        save_file(_contiguous(encoder_state(getattr(pipe, component))), str(text_encoders / name))
    save_file(_contiguous(vae_state(pipe)), str(vae / f"{vae_name}.safetensors"))


def k_quant_blocks(rows: int, columns: int, qtype, seed: int = 0) -> np.ndarray:
    """Valid K-quant bytes (Q4_K, Q5_K: 256 weights a block) for a ``rows`` × ``columns`` matrix: random quants and
    sub-scales under small fp16 block scales. gguf's Python package dequantizes K-quants but cannot quantize to them,
    so a test file gets made-up weights of the real format."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(seed).integers(0, 256, (rows, columns // block, size), dtype=np.uint8)
    blocks[:, :, 0:4] = np.array([1e-4, 5e-5], dtype=np.float16).view(np.uint8)  # d, dmin of each block
    return blocks.reshape(rows, -1)


def save_gguf(pipe, family: str, path: Path, k_quants: dict | None = None) -> Path:
    """The transformer as a GGUF file: Q8_0 matrices (rows of 32-multiples), the rest F32; ``k_quants``: tensor name
    → a K-quant type written with made-up weights (``k_quant_blocks``)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=family)
    for name, tensor in transformer_state(pipe, family).items():
        array = tensor.float().numpy()
        if name in (k_quants or {}):
            qtype = k_quants[name]
            writer.add_tensor(name, k_quant_blocks(*array.shape, qtype), raw_dtype=qtype)
        elif array.ndim == 2 and array.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
