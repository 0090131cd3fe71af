"""Device and dtype choice, the memory plan (whole model on the GPU, model CPU offload, an 8-bit transformer or
sequential offload, by the GPU's free memory and the model's weight sizes), and the memory options applied to a
loaded pipeline."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from backend.models import zerogpu
from backend.models.quantize import (
    QUANTIZED_TRANSFORMER,
    QUANTIZER,
    file_parts,
    quantization,
    quantization_note,
    quantize_blocker,
    tensor_bytes,
)
from backend.settings import Settings

log = logging.getLogger(__name__)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class DevicePlan:
    device: str  # where the weights live between runs
    dtype: torch.dtype
    gpu_per_call: bool = False  # ZeroGPU: each run moves the pipeline to a GPU lent for that call


# CPU flags (Linux /proc/cpuinfo names) that mean bf16 matmuls run natively: AVX-512 BF16 or AMX. Without them
# PyTorch emulates bf16 through fp32 and it is no faster (often slower) than fp32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16_flags(cpuinfo: Path | None = None) -> list[str]:
    """The native-bf16 flags this CPU reports (empty where there are none or the OS does not say)."""
    cpuinfo = cpuinfo or CPUINFO
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    return []


def plan_device(settings: Settings) -> DevicePlan:
    """CUDA fp16, then MPS fp16, then CPU (bf16 or fp32), unless settings name a device or dtype.

    On a CPU with native bf16 the default is bfloat16 (see ``cpu_dtype``), elsewhere float32.

    On ZeroGPU the weights stay on the CPU in fp16 (CUDA must not be initialised in the main process); each run
    moves them to the GPU inside its ``spaces.GPU`` call (``backend.models.zerogpu``).
    """
    if settings.device == "auto" and zerogpu.active():
        return DevicePlan("cpu", _dtype(settings, torch.float16), gpu_per_call=True)
    device = settings.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    return DevicePlan(device, _dtype(settings, cpu_dtype() if device == "cpu" else torch.float16))


def cpu_dtype() -> torch.dtype:
    """bfloat16 where the CPU computes it natively, float32 elsewhere (emulated bf16 is no faster; fp16 on a CPU
    is slow or unsupported for several ops). bench/bench_speed.py measured bf16 at 2.0x fp32's speed for SD 1.5 at
    256² on such a CPU (VAE decode included), its pixels within 4/255 of fp32's."""
    return torch.bfloat16 if cpu_bf16_flags() else torch.float32


def _dtype(settings: Settings, auto: torch.dtype) -> torch.dtype:
    if settings.dtype == "auto":
        return auto
    if settings.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or auto, got {settings.dtype!r}")
    return DTYPES[settings.dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``: the names --dtype takes."""
    return str(dtype).removeprefix("torch.")


def describe_plan(settings: Settings, plan: DevicePlan, parts: Mapping[str, int] | None = None) -> str:
    """One line for the page and the log: device, precision and why that precision; on a GPU, the memory plan of
    a model whose weights are ``parts`` (component → bytes)."""
    name = dtype_name(plan.dtype)
    if settings.dtype != "auto":
        why = "set by --dtype / SDSTUDIO_DTYPE"
    elif plan.device == "cpu":
        flags = cpu_bf16_flags()
        why = (
            f"the default on a CPU with native bf16 ({', '.join(flags)}); --dtype float32 for full precision"
            if flags
            else "the default; this CPU has no native bf16"
        )
    else:
        why = "default for this device"
    line = f"Running on {plan.device} in {name} ({why})."
    if plan.device == "cuda" and parts and not settings.cpu_offload:
        line += f" Default model: {plan_memory(gpu_free_bytes(), parts).line()}."
    return line


# Default caps on one request's work (width × height × steps × pictures). On a CPU one 512² SD 1.5 step takes
# about ten seconds, so two 512² pictures at 50 steps (a quarter of an hour); on a GPU, 8 pictures of 1024² at
# 100 steps. Stop acts between steps, and the cap keeps a step from being the 2048² one that takes minutes.
CPU_PIXEL_STEPS = 512 * 512 * 50 * 2
GPU_PIXEL_STEPS = 1024 * 1024 * 100 * 8


def pixel_step_limit(settings: Settings) -> int:
    if settings.max_pixel_steps > 0:
        return settings.max_pixel_steps
    plan = plan_device(settings)
    if plan.gpu_per_call:
        return zerogpu.MAX_PIXEL_STEPS  # more would be cut off at ZeroGPU's longest call
    return CPU_PIXEL_STEPS if plan.device == "cpu" else GPU_PIXEL_STEPS


def apply_memory_options(pipe, settings: Settings, plan: DevicePlan, size: int = 512) -> list[str]:
    """Move ``pipe`` to its device with the chosen memory and speed options; return what was enabled. ``size``: the
    model's default picture side, where torch.compile compiles the UNet at load."""
    enabled: list[str] = []
    if settings.attention_slicing:
        pipe.enable_attention_slicing()
        enabled.append("attention slicing")
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
        enabled.append("VAE slicing")
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
        enabled.append("VAE tiling")
    elif settings.vae_tile_pixels > 0:
        enabled.append(f"VAE tiling over {settings.vae_tile_pixels / 1e6:.1f} MP")
    if settings.xformers:
        try:
            pipe.enable_xformers_memory_efficient_attention()
            enabled.append("xformers")
        except Exception as err:  # missing package, no CUDA, or an incompatible build
            log.warning("xformers not usable (%s); using PyTorch SDPA attention", err)
    placed = place(pipe, plan, settings)
    if placed:
        enabled.append(placed)
    elif note := quantization_note(pipe):
        enabled.append(note)
    unet = getattr(pipe, "unet", None)  # transformer models (FLUX, SD3) have none: these UNet options pass them by
    if settings.channels_last and unet is not None:
        pipe.unet.to(memory_format=torch.channels_last)
        enabled.append("channels_last UNet")
    if settings.compile_unet and unet is not None and not getattr(pipe.unet, "_compiled_call_impl", None):
        enabled.append(f"torch.compile UNet (compiled in {compile_unet(pipe.unet, plan, size):.1f} s)")
    return enabled


def compile_unet(unet, plan: DevicePlan, size: int = 512) -> float:
    """``torch.compile`` the UNet in place and compile it now with one forward pass (batch 2, as CFG runs it) at
    ``size``², so the first Generate does not pay for it; returns the seconds it took (logged: it can be minutes).
    Other sizes compile again on first use."""
    started = time.perf_counter()
    unet.compile()
    config = unet.config
    side = size // 8
    dtype = next(unet.parameters()).dtype
    tensor = lambda *shape: torch.zeros(*shape, device=plan.device, dtype=dtype)  # noqa: E731
    kwargs = {}
    if config.addition_embed_type == "text_time":  # SDXL's pooled text and size conditioning
        text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": tensor(2, text_dim), "time_ids": tensor(2, 6)}
    with torch.no_grad():
        unet(tensor(2, config.in_channels, side, side), 999, tensor(2, 77, config.cross_attention_dim), **kwargs)
    seconds = time.perf_counter() - started
    log.info("torch.compile: UNet compiled in %.1f s (one pass at %dx%d)", seconds, size, size)
    return seconds


def tile_vae_for(pipe, width: int, height: int, settings: Settings) -> bool:
    """VAE tiling only when the picture needs it (``vae_tile_pixels``) or the owner asked for it always: tiles cost
    time and can show faint seams, a whole large decode can run out of memory."""
    if settings.vae_tiling:
        return True
    tiled = settings.vae_tile_pixels > 0 and width * height > settings.vae_tile_pixels
    (pipe.vae.enable_tiling if tiled else pipe.vae.disable_tiling)()
    return tiled


# --- the memory plan ------------------------------------------------------------------------------------------------

GIB = 1 << 30
# What a run needs on the GPU beyond the weights there: activations, attention and the VAE decode of a 1024²
# picture, and the allocator's slack. A card's free memory is its size less the CUDA context's (CONTEXT).
ACTIVATIONS = 1 * GIB
CONTEXT = 0.5 * GIB
FULL, MODEL_OFFLOAD, SEQUENTIAL = "whole model on the GPU", "model CPU offload", "sequential CPU offload"
DENOISERS = ("transformer", "unet")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
# bf16/fp16 weight bytes of the hub models whose files are not here (the plan for a known hub id before its download,
# and the table of docs/performance.md): FLUX.1 transformers and T5-XXL are the "total_size" of the repositories'
# safetensors index files; the others are published parameter counts × 2 bytes (approximate, to ~1%).
FLUX_TEXT = {"text_encoder_2": 9_524_621_312, "text_encoder": 250_000_000, "vae": 170_000_000}  # T5-XXL, CLIP-L
SD3_TEXT = {"text_encoder_3": 9_524_621_312, "text_encoder_2": 1_390_000_000, "text_encoder": 250_000_000,
            "vae": 170_000_000}  # T5-XXL, CLIP-G, CLIP-L
STATED_SIZES: dict[str, dict[str, int]] = {
    "black-forest-labs/FLUX.1-dev": {"transformer": 23_802_816_640, **FLUX_TEXT},
    "black-forest-labs/FLUX.1-schnell": {"transformer": 23_782_357_120, **FLUX_TEXT},
    "stabilityai/stable-diffusion-3.5-large": {"transformer": 16_290_000_000, **SD3_TEXT},
    "stabilityai/stable-diffusion-3.5-medium": {"transformer": 4_940_000_000, **SD3_TEXT},
    "stabilityai/stable-diffusion-xl-base-1.0": {
        "unet": 5_140_000_000, "text_encoder_2": 1_390_000_000, "text_encoder": 250_000_000, "vae": 170_000_000,
    },
}


@dataclass(frozen=True)
class MemoryPlan:
    mode: str  # FULL, MODEL_OFFLOAD or SEQUENTIAL: where the weights go
    model_gib: float  # all the weights (the transformer at 8 bits when quantized)
    need_gib: float  # what the mode needs on the GPU at once (largest part or whole model, activations included)
    free_gib: float
    quantized: bool = False  # the transformer loads as 8-bit (QUANTIZER)
    why_not: str = ""  # why it is not quantized where that would have fit (no torchao, ...)

    def line(self) -> str:
        mode = f"{self.mode} with an 8-bit transformer ({QUANTIZER})" if self.quantized else self.mode
        note = f"; an 8-bit transformer would fit but {self.why_not}" if self.why_not else ""
        return (
            f"{mode} ({self.model_gib:.1f} GB of weights, {self.need_gib:.1f} GB needed at once, "
            f"{self.free_gib:.1f} GB free on the GPU{note})"
        )


def needed(weight_bytes: float) -> float:
    return weight_bytes + ACTIVATIONS


def _placement(free_bytes: float, parts: Mapping[str, int]) -> tuple[str, float]:
    total, largest = sum(parts.values()), max(parts.values(), default=0)
    if needed(total) <= free_bytes:
        return FULL, needed(total)
    if needed(largest) <= free_bytes:
        return MODEL_OFFLOAD, needed(largest)
    return SEQUENTIAL, ACTIVATIONS


def plan_memory(free_bytes: float, parts: Mapping[str, int], blocker: str | None = None) -> MemoryPlan:
    """The plan for a model of ``parts`` (component → weight bytes) on a GPU with ``free_bytes`` free: everything on
    the GPU when it fits; else model CPU offload (one component on the GPU at a time: the largest must fit); else,
    when that fits, the same with the transformer in 8 bits (half its bf16 size; the quality cost is small, sequential
    offload's slowness is not); else sequential offload (layer by layer: slow, fits any model).

    ``blocker``: why the transformer may not be quantized ("" = it may; None = ``quantize_blocker()``)."""
    mode, need = _placement(free_bytes, parts)
    total = sum(parts.values())
    if mode == SEQUENTIAL and "transformer" in parts:
        small = {**parts, "transformer": parts["transformer"] // 2}
        small_mode, small_need = _placement(free_bytes, small)
        if small_mode != SEQUENTIAL:
            blocker = quantize_blocker() if blocker is None else blocker
            if not blocker:
                return MemoryPlan(small_mode, sum(small.values()) / GIB, small_need / GIB, free_bytes / GIB, True)
            return MemoryPlan(mode, total / GIB, need / GIB, free_bytes / GIB, why_not=blocker)
    return MemoryPlan(mode, total / GIB, need / GIB, free_bytes / GIB)


def quantized_parts(parts: Mapping[str, int], bits: int = 8) -> dict[str, int]:
    """``parts`` with the denoiser and the T5 encoder (FLUX's ``text_encoder_2``, SD3's ``text_encoder_3``) at
    ``bits`` instead of 16: what a quantized checkpoint of the model weighs."""
    t5 = "text_encoder_3" if "text_encoder_3" in parts else "text_encoder_2" if "transformer" in parts else ""
    big = (*DENOISERS, t5)
    return {name: size * bits // 16 if name in big else size for name, size in parts.items()}


def weight_sizes(source: str | Path, extra_files: Iterable[str | Path] = ()) -> dict[str, int]:
    """Component → bytes of its weight files: a diffusers folder's subfolders, a single file (plus the files it
    lacks, ``extra_files``), or a hub id's stated sizes (empty when unknown)."""
    path = Path(source)
    sizes: dict[str, int] = {}
    if path.is_dir():
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            total = sum(f.stat().st_size for f in folder.rglob("*") if f.suffix in WEIGHT_SUFFIXES)
            if total:
                sizes[folder.name] = total
    elif path.is_file():
        sizes.update(file_parts(path))
    else:
        sizes.update(STATED_SIZES.get(str(source), {}))
    for extra in extra_files:
        if Path(extra).is_file():
            sizes[Path(extra).stem] = Path(extra).stat().st_size
    return sizes


def module_sizes(pipe) -> dict[str, int]:
    """Component → bytes of a loaded pipeline's weights at their dtype (what goes to the GPU); a quantized
    transformer as ``QUANTIZED_TRANSFORMER``."""
    sizes = {}
    for name, part in getattr(pipe, "components", {}).items():
        if isinstance(part, torch.nn.Module):
            name = QUANTIZED_TRANSFORMER if name == "transformer" and quantization(part) else name
            sizes[name] = sum(tensor_bytes(t) for t in (*part.parameters(), *part.buffers()))
    return sizes


def gpu_free_bytes() -> float:
    return float(torch.cuda.mem_get_info()[0])


def place(pipe, plan: DevicePlan, settings: Settings, free_bytes: float | None = None) -> str:
    """Put ``pipe`` on its device as the memory plan says (CUDA), or as ``--cpu-offload`` asks; returns what it did."""
    if plan.device != "cuda":
        pipe.to(plan.device)
        return ""
    if settings.cpu_offload:
        pipe.enable_model_cpu_offload()
        return MODEL_OFFLOAD
    sizes = module_sizes(pipe)
    memory = plan_memory(gpu_free_bytes() if free_bytes is None else free_bytes, sizes)
    if quantization(getattr(pipe, "transformer", None)) == "torchao":  # the loader's plan quantized it
        memory = replace(memory, quantized=True)
    log.info("memory plan: %s", memory.line())
    if memory.mode == MODEL_OFFLOAD:
        pipe.enable_model_cpu_offload()
    elif memory.mode == SEQUENTIAL:
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(plan.device)
        return ""
    return f"{memory.mode}: {memory.line()}"
