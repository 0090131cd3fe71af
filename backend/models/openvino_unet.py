"""OpenVINO on the CPU for the SD 1.x/2.x UNet and the VAE decoder (``--backend openvino``).

The torch modules stay in the pipeline; their ``forward`` is replaced by one that runs an OpenVINO model converted
from them (``openvino.convert_model``), so the diffusers pipeline, the samplers, the step callback (Stop, previews)
and ``from_pipe`` work unchanged. A call the converted graph can't take (ControlNet residuals, SDXL's added
conditions, an active LoRA, DeepCache's block hooks) runs the torch ``forward`` instead, logs why once and tells
the page after the run (``take_notes``); the replacement ``forward``s are backend/models/openvino_forward.py's.
``--backend auto`` runs OpenVINO only where it was measured faster (backend/models/openvino_choice.py); on a
model's first start it converts in the background (``convert_later``) while torch serves, and ``take_ready`` puts
the result on the model between two runs.

Converted models are saved under ``<cache_dir>/openvino/<key>`` (backend/models/openvino_cache.py), keyed by the
weights, the shape policy and the precision, so a second start reads them instead of converting again. Batch,
height, width and prompt length are dynamic: a new size or batch never converts again.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from backend.models import openvino_cache, openvino_choice
from backend.models.devices import DevicePlan
from backend.models.openvino_forward import (  # noqa: F401  (call_reason, lora_active, POLL_MS: used from here too)
    POLL_MS,
    Converted,
    call_reason,
    decoder_forward,
    lora_active,
    notes_of,
    pending_notes,
    unet_forward,
)
from backend.settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
CONVERTING = "auto: converting the UNet to OpenVINO in the background (first start with this model); torch until then"
convert = openvino_cache.convert  # a module global, so tests can count the conversions
WORKER = openvino_cache.Worker()  # auto's background conversions, one at a time
_TOLD: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()  # UNets whose torch-only run the page was told
_PENDING: weakref.WeakKeyDictionary[torch.nn.Module, Pending] = weakref.WeakKeyDictionary()  # convert_later's
_FAILED: dict[str, str] = {}  # a conversion's key → why it failed: this process never tries those weights again


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


def take_notes(pipe: Any) -> list[str]:
    """The OpenVINO fallbacks and auto decisions since the last call, one line each, for the page (the engine adds
    them to the run's warnings)."""
    taken: list[str] = []
    vae = getattr(pipe, "vae", None)
    unet, decoder = getattr(pipe, "unet", None), getattr(vae, "decoder", None)
    on_openvino = hasattr(getattr(decoder, "forward", None), "converted")  # this model was put on OpenVINO
    told = unet in _TOLD or converting(unet) is not None  # auto converting it: CONVERTING below says so
    if on_openvino and unet is not None and not hasattr(unet.forward, "converted") and not told:
        _TOLD.add(unet)  # once per UNet: it runs on torch every time
        reason = unsupported_unet(unet) or "this task's own UNet (e.g. a 9-channel inpainting UNet) is not converted"
        taken.append(f"OpenVINO UNet: {reason}, so it runs on torch")
    if converting(unet) is not None:
        taken.append(CONVERTING)
    for module in (unet, decoder):
        pending = pending_notes(module) if module is not None else None
        if pending:
            taken += pending
            pending.clear()
    return taken


def unsupported_unet(unet: Any) -> str:
    """Why a UNet can't be converted ('' = it can)."""
    if unet is None:
        return "this model has no UNet (a transformer model)"
    if unet.config.get("addition_embed_type") or unet.config.get("class_embed_type"):
        return "SDXL-style added conditions (addition_embed_type) are not converted yet"
    return ""


def auto_plan(cache: openvino_cache.DiskCache, unet: Any, hint: str) -> tuple[str, str, str]:
    """auto's decision for a model's UNet at load, converting nothing here: ("torch" | "openvino" | "measure" |
    "convert" (in the background), why, the conversion's cache key where known)."""
    if reason := unsupported_unet(unet):
        return "torch", f"auto: torch for this model: {reason}", ""
    if not cache.entries() and not _FAILED:  # cheap: no hashing where nothing was ever converted or failed
        return "convert", CONVERTING, ""
    key = openvino_cache.entry_key("unet", unet)
    if key in _FAILED:
        return "torch", _FAILED[key], key
    if not cache.has(key):
        return "convert", CONVERTING, key
    measured = openvino_choice.Calibrations(cache.root).get(openvino_choice.Calibrations.key(key, hint))
    if measured is not None:
        return ("openvino" if measured.faster else "torch"), f"auto: {measured.reason(hint)}", key
    why = "auto: this model's OpenVINO conversion is not measured on this CPU yet: its first UNet call runs on both"
    return "measure", why, key


def attach_unet(
    pipe: Any,
    cache: openvino_cache.DiskCache,
    hint: str,
    key: str,
    measure: bool,
    done: openvino_cache.Compiled | None = None,
    on_faster: Callable[[], None] | None = None,
) -> Converted:
    """The UNet on its OpenVINO model (``done``, else read or converted now); ``measure``: its first call is timed
    on both backends (auto) and ``on_faster`` called where OpenVINO won."""
    unet = pipe.unet
    if done is None:
        example, shapes = openvino_cache.unet_example(unet)
        convert_unet = lambda: convert(openvino_cache.UNetGraph(unet), example, shapes)  # noqa: E731
        done = cache.compiled("unet", unet, hint, convert_unet, key=key)
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
            if measured.faster and on_faster is not None:
                on_faster()

        converted.measure = record
    unet.forward = unet_forward(unet, converted, unet.forward)
    return converted


def attach_decoder(decoder: torch.nn.Module, done: openvino_cache.Compiled, hint: str) -> str:
    converted = Converted("VAE decoder", done.model, done.from_cache, notes_of(decoder))
    decoder.forward = decoder_forward(decoder, converted, decoder.forward)
    return f"OpenVINO VAE decoder ({hint}{', cached' if done.from_cache else ''})"


def compiled_decoder(cache: openvino_cache.DiskCache, vae: Any, hint: str, key: str) -> openvino_cache.Compiled:
    example, shapes = openvino_cache.decoder_example(vae)
    convert_decoder = lambda: convert(openvino_cache.DecoderGraph(vae.decoder), example, shapes)  # noqa: E731
    return cache.compiled("vae-decoder", vae.decoder, hint, convert_decoder, key=key)


def attach(pipe: Any, settings: Settings, plan: DevicePlan) -> list[str]:
    """Put the pipeline's UNet and VAE decoder on OpenVINO where ``settings.backend`` says so; returns notes for
    the model's memory options (e.g. 'OpenVINO UNet (bf16, cached)'). Called under the pipeline cache's lock
    while no run uses the model yet (its background conversion, if any, copies the modules here)."""
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
        if mode in ("openvino", "torch") and key:  # a decision read back from the calibration: said once on the page
            notes_of(unet).append(why)
        if mode == "convert":
            convert_later(unet, pipe.vae, cache, hint)
        if mode in ("torch", "convert"):
            return [why]
    notes = []
    if reason := unsupported_unet(unet):  # --backend openvino only: auto returned above
        log.info("OpenVINO UNet: %s, so the UNet runs on torch", reason)
    else:
        converted = attach_unet(pipe, cache, hint, key, measure=mode == "measure")
        notes.append(f"OpenVINO UNet ({hint}{', cached' if converted.from_cache else ''})")
    if settings.backend == "openvino" or mode == "openvino":  # auto measuring: the decoder follows a faster UNet
        decoder_key = openvino_cache.entry_key("vae-decoder", pipe.vae.decoder)  # hashes its weights: only here
        if settings.backend == "openvino" or cache.has(decoder_key):
            notes.append(attach_decoder(pipe.vae.decoder, compiled_decoder(cache, pipe.vae, hint, decoder_key), hint))
    cache.prune()
    return notes


def attach_variant(unet: Any, settings: Settings, plan: DevicePlan) -> Any:
    """A model's other UNet (its 9-channel inpainting variant, loaded apart from the pipeline) on OpenVINO as
    ``attach`` puts the model's own: converted under ``--backend openvino``; under auto read back, measured, or
    converted in the background. Returns ``unet`` (its ``forward`` replaced or not)."""
    use, _ = choose(settings, plan)
    if not use or unet is None or unsupported_unet(unet):
        return unet
    hint = precision_hint(plan)
    cache = openvino_cache.DiskCache(settings.cache_dir / "openvino")
    mode, key = "openvino", ""
    if settings.backend == "auto":
        mode, why, key = auto_plan(cache, unet, hint)
        log.info("inpainting UNet: %s", why)
        if mode == "convert":
            convert_later(unet, None, cache, hint)
        if mode in ("torch", "convert"):
            return unet
    attach_unet(SimpleNamespace(unet=unet), cache, hint, key, measure=mode == "measure")
    cache.prune()
    return unet


@dataclass
class Pending:
    """auto: a UNet's conversion running in the background (``WORKER``), and where its result goes."""

    job: openvino_cache.Job
    cache: openvino_cache.DiskCache
    hint: str
    vae: Any  # the VAE whose decoder goes on OpenVINO with the UNet (None: the inpainting variant's job)


def convert_later(unet: torch.nn.Module, vae: Any, cache: openvino_cache.DiskCache, hint: str) -> openvino_cache.Job:
    """Convert ``unet`` (and ``vae``'s decoder) on the worker thread while torch serves the requests. The worker
    converts copies taken now, at load, when no run uses the modules (a run's Stop hooks or DeepCache would
    otherwise be traced into the graph); ``take_ready`` puts the result on the live modules between runs."""
    unet_copy = copy.deepcopy(unet)  # same dtype: hashed as the live module is, for the next start's key
    decoder_copy = copy.deepcopy(vae.decoder) if vae is not None else None

    def work() -> tuple[str, openvino_cache.Compiled, openvino_cache.Compiled | None]:
        key = openvino_cache.entry_key("unet", unet_copy)
        try:
            example, shapes = openvino_cache.unet_example(unet_copy)
            graph = openvino_cache.UNetGraph(unet_copy.to(torch.float32).eval())  # converted in place: no 2nd copy
            done = cache.compiled("unet", unet_copy, hint, lambda: convert(graph, example, shapes), key=key)
            decoder = None
            if decoder_copy is not None:
                decoder_key = openvino_cache.entry_key("vae-decoder", decoder_copy)
                vae_copy = SimpleNamespace(config=vae.config, decoder=decoder_copy.to(torch.float32).eval())
                decoder = compiled_decoder(cache, vae_copy, hint, decoder_key)
        except Exception as error:
            _FAILED[key] = failed(openvino_cache.one_line(error))  # not tried again with these weights
            raise
        cache.prune()
        return key, done, decoder

    log.info("auto: converting the UNet to OpenVINO on a background thread (%s)", hint)
    job = WORKER.submit(work)
    _PENDING[unet] = Pending(job, cache, hint, vae)
    return job


def take_ready(pipe: Any) -> None:
    """auto: before a run (under the engine's run lock, so no run uses the modules now), put a UNet whose
    background conversion has finished on OpenVINO; its first call is then measured against torch, unless this CPU
    has a stored measurement. A failed conversion leaves torch, said once."""
    unet = getattr(pipe, "unet", None)
    pending = _PENDING.get(unet) if unet is not None else None
    if pending is None or not pending.job.done.is_set():
        return
    del _PENDING[unet]
    if pending.job.error:
        reason = failed(pending.job.error)
        notes_of(unet).append(reason)
        return
    key, done, decoder_done = pending.job.result
    measured = openvino_choice.Calibrations(pending.cache.root).get(openvino_choice.Calibrations.key(key, pending.hint))
    vae = pending.vae

    def decoder_too() -> None:
        if vae is not None and decoder_done is not None:
            log.info("auto: %s", attach_decoder(vae.decoder, decoder_done, pending.hint))

    if measured is not None and not measured.faster:
        notes_of(unet).append(f"auto: {measured.reason(pending.hint)}")
        return
    attach_unet(SimpleNamespace(unet=unet), pending.cache, pending.hint, key, measured is None, done, decoder_too)
    if measured is not None:
        notes_of(unet).append(f"auto: {measured.reason(pending.hint)}")
        decoder_too()


def failed(error: str) -> str:
    return f"auto: torch for this model: its OpenVINO conversion failed ({error})"


def converting(unet: Any) -> openvino_cache.Job | None:
    """The background conversion of ``unet`` not yet put on it (tests wait on its ``done``)."""
    pending = _PENDING.get(unet) if unet is not None else None
    return pending.job if pending is not None else None
