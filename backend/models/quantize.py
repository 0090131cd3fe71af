"""The memory plan's 8-bit transformer: whether a model's transformer may be quantized (torchao installed, not a
GGUF or UNet), the ``quantization_config`` that loads it so (diffusers' ``TorchAoConfig`` with torchao's int8
weight-only), how a loaded module is quantized, and what weights weigh: a single file's parts from its header, a
quantized tensor by the bytes it holds."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import torch

from backend.models import dit_keys
from backend.models.checkpoints import DIT_PARTS, CheckpointError, read_header

# The quantizer of the plan's 8-bit transformer: torchao's int8 weight-only (diffusers' TorchAoConfig), an optional
# package (requirements.txt); without it the plan falls back to sequential offload and says why.
QUANTIZER = "int8 weight-only (torchao)"
NO_TORCHAO = "torchao is not installed (pip install torchao)"
QUANTIZED_TRANSFORMER = "transformer (quantized)"  # its part name in the sizes of a GGUF / already 8-bit transformer


def quantize_blocker() -> str:
    """Why the plan may not load a bf16/fp16/fp8 transformer in 8 bits ("" = it may): no torchao. (The plan asks
    only where the model's parts hold a "transformer": a UNet or a GGUF transformer never is.)"""
    return "" if importlib.util.find_spec("torchao") else NO_TORCHAO


def file_parts(path: Path) -> dict[str, int]:
    """Component → bytes of a single file: a GGUF transformer as it is (it stays quantized); a FLUX / SD3 / Chroma
    safetensors file split into its transformer and the parts it holds, each at 2 bytes a weight (fp8 weights are
    upcast on load); any other file whole, as "checkpoint"."""
    size = path.stat().st_size
    if path.suffix.lower() == ".gguf":
        return {QUANTIZED_TRANSFORMER: size}
    try:
        tensors = read_header(path)
    except CheckpointError:
        return {"checkpoint": size}
    if dit_keys.family_of(dit_keys.strip_prefix(tensors)) is None:
        return {"checkpoint": size}
    sizes: dict[str, int] = {}
    for key, tensor in tensors.items():
        part = next((p for p, prefixes in DIT_PARTS.items() if key.startswith(prefixes)), "transformer")
        sizes[part] = sizes.get(part, 0) + 2 * math.prod(tensor.shape)
    return sizes


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds; a quantized tensor subclass (torchao) by its inner tensors, not its nominal dtype."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def quantization(module) -> str:
    """How a loaded model's weights are quantized ("" = not): diffusers' quantizer name (torchao, gguf, ...)."""
    quantizer = getattr(module, "hf_quantizer", None)
    method = getattr(quantizer.quantization_config, "quant_method", "") if quantizer is not None else ""
    return str(getattr(method, "value", method))  # diffusers' QuantizationMethod enum → "torchao", "gguf"


def quantization_note(pipe) -> str:
    """What the page and log say of a quantized transformer ("" for none)."""
    method = quantization(getattr(pipe, "transformer", None))
    if not method:
        return ""
    return f"8-bit transformer ({QUANTIZER})" if method == "torchao" else f"{method} quantized transformer"


def torchao_config() -> Any:
    """The transformer's ``quantization_config``: torchao int8 weight-only (weights int8 with a scale per row,
    matmuls in the compute dtype). Raises ImportError without torchao (``quantize_blocker`` says so first)."""
    from diffusers import TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig())
