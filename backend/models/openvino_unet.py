"""OpenVINO on the CPU for the SD 1.x/2.x UNet and the VAE decoder (``--backend openvino``).

The torch modules stay in the pipeline; their ``forward`` is replaced by one that runs an OpenVINO model converted
from them (``openvino.convert_model``), so the diffusers pipeline, the samplers, the step callback (Stop, previews)
and ``from_pipe`` work unchanged. A call the converted graph can't take (ControlNet residuals, SDXL's added
conditions, an active LoRA, DeepCache's block hooks) runs the torch ``forward`` instead, logs why once and tells
the page after the run (``take_notes``). ``--backend auto`` runs OpenVINO only where it was measured faster
(backend/models/openvino_choice.py).

Converted models are saved under ``<cache_dir>/openvino/<key>`` (backend/models/openvino_cache.py), keyed by the
weights, the shape policy and the precision, so a second start reads them instead of converting again. Batch,
height, width and prompt length are dynamic: a new size or batch never converts again.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from backend.models import openvino_cache, openvino_choice
from backend.models.devices import DevicePlan
from backend.settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
NOT_CONVERTED = (
    "auto: torch for this model: it has no OpenVINO conversion in the cache yet (a start with --backend openvino "
    "converts it; auto then measures it once)"
)
POLL_MS = 50  # how often a running OpenVINO inference checks the run's Stop
STOP_HOOKS = "backend.generation.interrupt"  # whose forward pre-hooks are the run's Stop check
# What the page hears after a run: per module, the fallbacks and auto's decisions not shown yet (take_notes).
_NOTES: weakref.WeakKeyDictionary[torch.nn.Module, list[str]] = weakref.WeakKeyDictionary()
_TOLD: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()  # UNets whose torch-only run the page was told


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
        return True, openvino_choice.page_line(backend, settings.cache_dir / "openvino")
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


def take_notes(pipe: Any) -> list[str]:
    """The OpenVINO fallbacks and auto decisions since the last call, one line each, for the page (the engine adds
    them to the run's warnings)."""
    taken: list[str] = []
    vae = getattr(pipe, "vae", None)
    unet, decoder = getattr(pipe, "unet", None), getattr(vae, "decoder", None)
    on_openvino = hasattr(getattr(decoder, "forward", None), "converted")  # this model was put on OpenVINO
    if on_openvino and unet is not None and not hasattr(unet.forward, "converted") and unet not in _TOLD:
        _TOLD.add(unet)  # once per UNet: it runs on torch every time
        reason = unsupported_unet(unet) or "this task's own UNet (e.g. a 9-channel inpainting UNet) is not converted"
        taken.append(f"OpenVINO UNet: {reason}, so it runs on torch")
    for module in (unet, decoder):
        pending = _NOTES.get(module) if module is not None else None
        if pending:
            taken += pending
            pending.clear()
    return taken


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
    """The OpenVINO model of ``graph`` (traced in fp32: a copy where it is in another dtype, so the torch module
    stays as it is; an fp32 module is traced as it is, saving a copy of its weights)."""
    import openvino as ov

    is_fp32 = all(param.dtype == torch.float32 for param in graph.parameters())
    traced = (graph if is_fp32 else copy.deepcopy(graph).to(torch.float32)).eval()
    inputs = [(ov.PartialShape(shape), ov.Type.f32) for shape, _ in shapes]
    with torch.no_grad():
        return ov.convert_model(traced, example_input=example, input=inputs)


def auto_plan(cache: openvino_cache.DiskCache, unet: Any, hint: str) -> tuple[str, str, str]:
    """auto's decision for a model's UNet without converting anything: ("torch" | "openvino" | "measure", why,
    the conversion's cache key)."""
    if reason := unsupported_unet(unet):
        return "torch", f"auto: torch for this model: {reason}", ""
    if not cache.entries():  # cheap: no hashing where nothing was ever converted
        return "torch", NOT_CONVERTED, ""
    key = openvino_cache.entry_key("unet", unet)
    if not cache.has(key):
        return "torch", NOT_CONVERTED, key
    measured = openvino_choice.Calibrations(cache.root).get(openvino_choice.Calibrations.key(key, hint))
    if measured is not None:
        return ("openvino" if measured.faster else "torch"), f"auto: {measured.reason(hint)}", key
    why = "auto: this model's OpenVINO conversion is not measured on this CPU yet: its first UNet call runs on both"
    return "measure", why, key


def attach_unet(pipe: Any, cache: openvino_cache.DiskCache, hint: str, key: str, measure: bool) -> Converted:
    unet = pipe.unet
    example, shapes = unet_example(unet)
    done = cache.compiled("unet", unet, hint, lambda: convert(_UNetGraph(unet), example, shapes), key=key)
    converted = Converted("UNet", done.model, done.from_cache, notes_of(unet))
    if measure:
        calibrations = openvino_choice.Calibrations(cache.root)
        stored_as = openvino_choice.Calibrations.key(key or openvino_cache.entry_key("unet", unet), hint)

        def record(measured: openvino_choice.Measurement) -> None:
            calibrations.put(stored_as, measured)
            reason = f"auto: {measured.reason(hint)}"
            log.info(reason)
            converted.notes.append(reason)
            converted.off = "" if measured.faster else reason

        converted.measure = record
    unet.forward = unet_forward(unet, converted, unet.forward)
    return converted


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
    unet = getattr(pipe, "unet", None)
    mode, key = "openvino", ""
    if settings.backend == "auto":
        mode, why, key = auto_plan(cache, unet, hint)
        log.info(why)
        if mode != "measure" and key:  # a decision read back from the calibration: said once on the page too
            notes_of(unet).append(why)
        if mode == "torch":
            return [why]
    notes = []
    if reason := unsupported_unet(unet):  # --backend openvino only: auto returned above
        log.info("OpenVINO UNet: %s, so the UNet runs on torch", reason)
    else:
        converted = attach_unet(pipe, cache, hint, key, measure=mode == "measure")
        notes.append(f"OpenVINO UNet ({hint}{', cached' if converted.from_cache else ''})")
    decoder = pipe.vae.decoder
    decoder_key = openvino_cache.entry_key("vae-decoder", decoder)
    if settings.backend == "openvino" or (mode == "openvino" and cache.has(decoder_key)):  # auto never converts
        example, shapes = decoder_example(pipe.vae)
        convert_decoder = lambda: convert(_DecoderGraph(decoder), example, shapes)  # noqa: E731
        done = cache.compiled("vae-decoder", decoder, hint, convert_decoder, key=decoder_key)
        converted = Converted("VAE decoder", done.model, done.from_cache, notes_of(decoder))
        decoder.forward = decoder_forward(decoder, converted, decoder.forward)
        notes.append(f"OpenVINO VAE decoder ({hint}{', cached' if done.from_cache else ''})")
    cache.prune()
    return notes


def attach_variant(unet: Any, settings: Settings, plan: DevicePlan) -> Any:
    """A model's other UNet (its 9-channel inpainting variant, loaded apart from the pipeline) on OpenVINO as
    ``attach`` puts the model's own: converted under ``--backend openvino``, measured or read back under auto.
    Returns ``unet`` (its ``forward`` replaced or not)."""
    use, _ = choose(settings, plan)
    if not use or unet is None or unsupported_unet(unet):
        return unet
    hint = precision_hint(plan)
    cache = openvino_cache.DiskCache(settings.cache_dir / "openvino")
    mode, key = "openvino", ""
    if settings.backend == "auto":
        mode, why, key = auto_plan(cache, unet, hint)
        log.info("inpainting UNet: %s", why)
        if mode == "torch":
            return unet
    attach_unet(SimpleNamespace(unet=unet), cache, hint, key, measure=mode == "measure")
    cache.prune()
    return unet
