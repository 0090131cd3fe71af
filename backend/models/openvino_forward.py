"""How a converted OpenVINO model stands in for a torch module (backend/models/openvino_unet.py attaches them).

``Converted`` runs the compiled model (polling the run's Stop while it runs); ``unet_forward`` and
``decoder_forward`` are the replacement ``forward``s, with torch's signature, that fall back to the torch
``forward`` for a call the converted graph can't take (``call_reason``) and note why for the page (``notes_of``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from backend.models import openvino_choice

log = logging.getLogger(__name__)

POLL_MS = 50  # how often a running OpenVINO inference checks the run's Stop
STOP_HOOKS = "backend.generation.interrupt"  # whose forward pre-hooks are the run's Stop check
# What the page hears after a run: per module, the fallbacks and auto's decisions not shown yet (take_notes).
_NOTES: weakref.WeakKeyDictionary[torch.nn.Module, list[str]] = weakref.WeakKeyDictionary()


@dataclass
class Converted:
    """One module's OpenVINO replacement and where it came from."""

    name: str  # "unet" | "vae decoder"
    compiled: Any  # openvino.CompiledModel
    from_cache: bool  # read from the disk cache (no conversion)
    notes: list[str] = field(default_factory=list)  # for the page after the run (take_notes)
    fallbacks: set[str] = field(default_factory=set)  # reasons already logged
    off: str = ""  # why torch runs every call (auto measured it faster); the converted model is then unused
    measure: Callable[[openvino_choice.Measurement], None] | None = None  # auto: time the next call on both

    def run(self, *inputs: torch.Tensor, dtype: torch.dtype, stop: Callable[[], None] | None = None) -> torch.Tensor:
        """The converted model on ``inputs``; ``stop`` (the run's Stop check, which raises) is polled while it
        runs, and a Stop cancels the inference within ``POLL_MS``."""
        arrays = [tensor.detach().to("cpu", torch.float32).contiguous().numpy() for tensor in inputs]
        if stop is None:
            out = self.compiled(arrays)[0]
            return torch.from_numpy(out.copy()).to(dtype)
        stop()
        request = self.compiled.create_infer_request()
        request.start_async(arrays)
        while not request.wait_for(POLL_MS):
            try:
                stop()
            except BaseException:
                request.cancel()
                raise
        return torch.from_numpy(request.get_output_tensor(0).data.copy()).to(dtype)

    def fall_back(self, reason: str) -> None:
        if reason not in self.fallbacks:
            self.fallbacks.add(reason)
            log.info("OpenVINO %s: %s, so this call runs on torch", self.name, reason)
        note = f"OpenVINO {self.name}: {reason}, so it ran on torch in this run"
        if note not in self.notes:
            self.notes.append(note)


def stop_check(module: torch.nn.Module) -> Callable[[], None] | None:
    """The run's Stop check (backend/generation/interrupt.py puts it on the torch blocks as a forward pre-hook, which
    the converted model never calls), or None when the run has none."""
    for block in module.modules():
        for hook in block._forward_pre_hooks.values():
            if getattr(hook, "__module__", "") == STOP_HOOKS:
                return lambda hook=hook, block=block: hook(block, ())
    return None


def notes_of(module: torch.nn.Module) -> list[str]:
    return _NOTES.setdefault(module, [])


def pending_notes(module: torch.nn.Module) -> list[str] | None:
    """The module's notes not taken yet, without adding an entry."""
    return _NOTES.get(module)


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
    if getattr(unet, "encoder_hid_proj", None) is not None:
        return "an IP-Adapter's image projection is not in the converted graph"
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
        if reason or converted.off:
            if reason:
                converted.fall_back(reason)
            return original(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])

        def on_openvino() -> torch.Tensor:
            return converted.run(sample, steps, encoder_hidden_states, dtype=sample.dtype, stop=stop_check(unet))

        def on_torch() -> torch.Tensor:
            return original(sample, timestep, encoder_hidden_states, return_dict=False, **kwargs)[0]

        out = measured_call(converted, on_torch, on_openvino, sample) if converted.measure else on_openvino()
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    forward.converted = converted  # for tests and take_notes' callers
    return forward


def measured_call(
    converted: Converted, on_torch: Callable[[], Any], on_openvino: Callable[[], Any], sample: torch.Tensor
) -> torch.Tensor:
    """auto's one measurement: this call on both backends, timed; the chosen backend's output is returned (the
    same pixels as a run on that backend alone)."""
    record, converted.measure = converted.measure, None
    batch, _, height, width = sample.shape
    shape = f"batch {batch} at {height}×{width} latents"
    measured, (torch_out, ov_out) = openvino_choice.time_both(on_torch, on_openvino, shape)
    if record is not None:
        record(measured)
    return torch_out if converted.off else ov_out


def decoder_forward(decoder: torch.nn.Module, converted: Converted, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(sample: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if latent_embeds is not None:
            converted.fall_back("latent_embeds (a conditioned decoder)")
            return original(sample, latent_embeds)
        return converted.run(sample, dtype=sample.dtype, stop=stop_check(decoder))

    forward.converted = converted
    return forward
