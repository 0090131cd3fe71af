"""OpenVINO on the CPU for the SD 1.x/2.x UNet and the VAE decoder (``--backend openvino``).

The torch modules stay in the pipeline; their ``forward`` is replaced by one that runs an OpenVINO model converted
from them (``openvino.convert_model``), so the diffusers pipeline, the samplers, the step callback (Stop, previews)
and ``from_pipe`` work unchanged. A call the converted graph can't take (ControlNet residuals, SDXL's added
conditions, an active LoRA, DeepCache's block hooks) runs the torch ``forward`` instead and logs why once.

Converted models are saved under ``<cache_dir>/openvino/<key>`` (backend/models/openvino_cache.py), keyed by the
weights, the shape policy and the precision, so a second start reads them instead of converting again. Batch,
height, width and prompt length are dynamic: a new size or batch never converts again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from backend.models import openvino_cache
from backend.models.devices import DevicePlan
from backend.settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
# Why auto stays on torch for now: OpenVINO was faster in the bench (docs/performance.md, "OpenVINO"), but a first
# start converts each model (about a minute for the demo model on this project's CPU, several for SD 1.5) and the
# rule that weighs that against the speed-up is not decided yet; --backend openvino asks for it.
AUTO_RULE = "auto runs torch (OpenVINO is opt-in for now: --backend openvino; see docs/performance.md)"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose(settings: Settings, plan: DevicePlan) -> tuple[bool, str]:
    """Whether models run on OpenVINO, and why (one line for the log and the page)."""
    backend = settings.backend
    if backend not in BACKENDS:
        raise ValueError(f"SDSTUDIO_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "torch":
        return False, ""
    if plan.device != "cpu":
        return False, f"backend {backend}: OpenVINO runs on the CPU only, so torch runs on {plan.device}"
    if not available():
        return False, f"backend {backend}: the openvino package is not installed, so torch runs"
    if settings.compile_unet:
        return False, f"backend {backend}: --compile-unet is set, so torch runs"
    if backend == "auto":
        return False, AUTO_RULE
    return True, f"UNet and VAE decoder on OpenVINO ({precision_hint(plan)}) set by --backend openvino"


def describe(settings: Settings, plan: DevicePlan) -> str:
    """The backend's part of the page's precision line ('' for plain torch)."""
    _, why = choose(settings, plan)
    return f" Backend: {why}." if why else ""


def precision_hint(plan: DevicePlan) -> str:
    """OpenVINO's inference precision matching the torch plan: bf16 where torch runs bf16, else f32."""
    return "bf16" if plan.dtype == torch.bfloat16 else "f32"


@dataclass
class Converted:
    """One module's OpenVINO replacement and where it came from."""

    name: str  # "unet" | "vae decoder"
    compiled: Any  # openvino.CompiledModel
    from_cache: bool  # read from the disk cache (no conversion)
    fallbacks: set[str] = field(default_factory=set)  # reasons already logged

    def run(self, *inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        arrays = [tensor.detach().to("cpu", torch.float32).contiguous().numpy() for tensor in inputs]
        out = self.compiled(arrays)[0]
        return torch.from_numpy(out.copy()).to(dtype)

    def fall_back(self, reason: str) -> None:
        if reason not in self.fallbacks:
            self.fallbacks.add(reason)
            log.info("OpenVINO %s: %s, so this call runs on torch", self.name, reason)


class _UNetGraph(torch.nn.Module):
    """The UNet call the converted graph covers: latents, timesteps (one per picture), text embeddings."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, hidden, return_dict=False)[0]


class _DecoderGraph(torch.nn.Module):
    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def unsupported_unet(unet: Any) -> str:
    """Why a UNet can't be converted ('' = it can)."""
    if unet is None:
        return "this model has no UNet (a transformer model)"
    if unet.config.get("addition_embed_type") or unet.config.get("class_embed_type"):
        return "SDXL-style added conditions (addition_embed_type) are not converted yet"
    return ""


def call_reason(unet: torch.nn.Module, kwargs: dict[str, Any]) -> str:
    """Why this UNet call must run on torch ('' = the converted graph takes it)."""
    residuals = ("down_block_additional_residuals", "mid_block_additional_residual")
    for name in (*residuals, "down_intrablock_additional_residuals"):
        if kwargs.get(name) is not None:
            return f"ControlNet residuals ({name})"
    for name in ("added_cond_kwargs", "class_labels", "timestep_cond", "attention_mask", "encoder_attention_mask"):
        if kwargs.get(name):
            return f"{name} is not in the converted graph"
    if (kwargs.get("cross_attention_kwargs") or {}).get("scale", 1.0) != 1.0:
        return "a LoRA scale (cross_attention_kwargs)"
    if any("forward" in vars(module) for module in unet.modules() if module is not unet):
        return "a torch hook on the UNet's blocks (DeepCache)"
    if lora_active(unet):
        return "an active LoRA (its weights are not fused into the converted model)"
    return ""


def lora_active(module: torch.nn.Module) -> bool:
    """Whether a peft adapter changes this module's output now (loaded and not disabled)."""
    if not getattr(module, "_hf_peft_config_loaded", False):
        return False
    for layer in module.modules():
        if hasattr(layer, "active_adapters") and hasattr(layer, "disable_adapters") and not layer.disable_adapters:
            if any(name in getattr(layer, "lora_A", {}) for name in layer.active_adapters):
                return True
    return False


def unet_forward(unet: torch.nn.Module, converted: Converted, original: Callable[..., Any]) -> Callable[..., Any]:
    """A UNet ``forward`` with the torch signature and return type that runs ``converted`` when it can."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    def forward(sample, timestep, encoder_hidden_states, *args, return_dict: bool = True, **kwargs):
        reason = "positional arguments beyond the text embeddings" if args else call_reason(unet, kwargs)
        if reason:
            converted.fall_back(reason)
            return original(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        out = converted.run(sample, steps, encoder_hidden_states, dtype=sample.dtype)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    return forward


def decoder_forward(converted: Converted, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(sample: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if latent_embeds is not None:
            converted.fall_back("latent_embeds (a conditioned decoder)")
            return original(sample, latent_embeds)
        return converted.run(sample, dtype=sample.dtype)

    return forward


def unet_example(unet: torch.nn.Module) -> tuple[tuple[torch.Tensor, ...], list[tuple[list[int], str]]]:
    """Example inputs for tracing and the dynamic input shapes (-1: batch, height, width, prompt length)."""
    channels, width = unet.config.in_channels, unet.config.cross_attention_dim
    side = 16 if unet.config.sample_size <= 32 else 32
    example = (torch.randn(2, channels, side, side), torch.full((2,), 500.0), torch.randn(2, 77, width))
    return example, [([-1, channels, -1, -1], "f32"), ([-1], "f32"), ([-1, -1, width], "f32")]


def decoder_example(vae: torch.nn.Module) -> tuple[tuple[torch.Tensor, ...], list[tuple[list[int], str]]]:
    channels = vae.config.latent_channels
    return (torch.randn(1, channels, 16, 16),), [([-1, channels, -1, -1], "f32")]


def convert(graph: torch.nn.Module, example: tuple[Any, ...], shapes: list[tuple[list[int], str]]) -> Any:
    """The OpenVINO model of ``graph`` (an fp32 copy is traced; the torch module stays as it is)."""
    import openvino as ov

    traced = copy.deepcopy(graph).to(torch.float32).eval()
    inputs = [(ov.PartialShape(shape), ov.Type.f32) for shape, _ in shapes]
    with torch.no_grad():
        return ov.convert_model(traced, example_input=example, input=inputs)


def attach(pipe: Any, settings: Settings, plan: DevicePlan) -> list[str]:
    """Put the pipeline's UNet and VAE decoder on OpenVINO where ``settings.backend`` says so; returns notes for
    the model's memory options (e.g. 'OpenVINO UNet (bf16, cached)')."""
    use, why = choose(settings, plan)
    if why:
        log.info(why)
    if not use:
        return []
    hint = precision_hint(plan)
    cache = openvino_cache.DiskCache(settings.cache_dir / "openvino")
    notes = []
    unet = getattr(pipe, "unet", None)
    if reason := unsupported_unet(unet):
        log.info("OpenVINO UNet: %s, so the UNet runs on torch", reason)
    else:
        example, shapes = unet_example(unet)
        done = cache.compiled("unet", unet, hint, lambda: convert(_UNetGraph(unet), example, shapes))
        unet.forward = unet_forward(unet, Converted("unet", done.model, done.from_cache), unet.forward)
        notes.append(f"OpenVINO UNet ({hint}{', cached' if done.from_cache else ''})")
    decoder = pipe.vae.decoder
    example, shapes = decoder_example(pipe.vae)
    done = cache.compiled("vae-decoder", decoder, hint, lambda: convert(_DecoderGraph(decoder), example, shapes))
    decoder.forward = decoder_forward(Converted("vae decoder", done.model, done.from_cache), decoder.forward)
    notes.append(f"OpenVINO VAE decoder ({hint}{', cached' if done.from_cache else ''})")
    cache.prune()
    return notes
