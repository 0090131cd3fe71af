"""A1111 JSON bodies → SD Studio requests, and results → A1111 responses. No I/O, no server.

A request field the body has under its A1111 name (``FieldSpec.a1111``, else our own name) is copied from the schema
(``_sent``); what A1111 says differently is converted by hand here: the sampler and scheduler names,
``override_settings``, the hires fix's fields, init pictures and masks, resize modes and ControlNet units
(``api.controlnet_units``). Errors are ``ValidationError(field, message)`` with A1111's field name, so a 422 names
what the caller sent.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import ImageOps
from pydantic import BaseModel

from backend.schema.catalog import a1111_names
from backend.schema.errors import ValidationError
from backend.schema.fields import specs
from backend.schema.requests import (
    ControlNetRequest,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from backend.schema.samplers import SAMPLERS, SCHEDULES, split_legacy_name
from backend.schema.seeds import batch_seeds

from .adetailer import adetailer_fields
from .codec import Limits, decode_image, encode_png
from .controlnet_units import (
    CONTROL_FIELDS,
    control_field,
    control_resize,
    control_units,
    guess_mode,
    inpaint_only,
    ip_adapter,
)
from .models import ExtrasBody, GenerationBody, Img2ImgBody, Txt2ImgBody

# Our field names → the caller's, so a refusal from the backend's validator names the field the caller sent.
FIELD_NAMES = a1111_names()
MAX_ITERATIONS = 16  # n_iter: each iteration is one engine run in the caller's one queue slot
# What A1111's UI sends for "the same as the first pass" in the hires fields it has and SD Studio does not.
SAME_AS_FIRST_PASS = (None, "", "Use same checkpoint", "Use same sampler", "Use same scheduler")
RESIZE_BY_NUMBER = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize"}


def rename(field: str, prefix: str = "") -> str:
    """The caller's name for one of our fields (``width_2`` style suffixes are kept)."""
    return prefix + FIELD_NAMES.get(field, field)


def scheduler_name(label: str) -> str:
    """A1111's scheduler ids: ``Karras`` → ``karras``, ``SGM Uniform`` → ``sgm_uniform``."""
    return label.lower().replace(" ", "_")


def sampler_and_schedule(body: GenerationBody) -> tuple[str, str]:
    name = body.sampler_name or body.sampler_index or "Euler"
    try:
        sampler, schedule = split_legacy_name(name)
    except KeyError:
        raise ValidationError(
            "sampler_name", f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}"
        ) from None
    if body.scheduler:
        wanted = scheduler_name(body.scheduler)
        match = [label for label in SCHEDULES if scheduler_name(label) == wanted]
        if not match:
            names = ", ".join(scheduler_name(label) for label in SCHEDULES)
            raise ValidationError("scheduler", f"unknown scheduler {body.scheduler!r}; choose one of: {names}")
        # A combined sampler name says its schedule; an explicit "automatic" does not undo it.
        if match[0] != "Automatic" or schedule == "Automatic":
            schedule = match[0]
    return sampler, schedule


def _sent(body: BaseModel, cls: type, beyond: type | None = None) -> dict[str, Any]:
    """The fields of ``cls`` (those ``beyond`` lacks) that the body has under their A1111 name, or ours, as sent.

    A None is A1111's "not set": the request's default stays. Lists become tuples (the requests hold tuples).
    Names with a dot (``override_settings.…``) are not body fields; they, and fields whose A1111 form differs,
    are converted by the caller, whose values win over these."""
    inherited = {item.name for item, _ in specs(beyond)} if beyond else set()
    fields: dict[str, Any] = {}
    for item, meta in specs(cls):
        name = meta.a1111 or item.name
        if item.name in inherited or name not in type(body).model_fields:
            continue
        value = getattr(body, name)
        if value is not None:
            fields[item.name] = tuple(value) if isinstance(value, list) else value
    return fields


def _overrides(body: GenerationBody) -> dict[str, Any]:
    """``override_settings``' checkpoint, clip skip and VAE (A1111's options by their names), checked."""
    overrides = body.override_settings or {}
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise ValidationError("override_settings.sd_model_checkpoint", "sd_model_checkpoint must be a model name")
    clip_skip = overrides.get("CLIP_stop_at_last_layers", 1)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12:
        raise ValidationError(
            "override_settings.CLIP_stop_at_last_layers", "CLIP_stop_at_last_layers must be a whole number from 1 to 12"
        )
    vae = overrides.get("sd_vae", "")  # a VAE's name: the route maps A1111's values (``ApiState.vae_name``)
    if not isinstance(vae, str):
        raise ValidationError("override_settings.sd_vae", "sd_vae must be a VAE file's name, Automatic or None")
    return {"model": checkpoint, "clip_skip": clip_skip, "vae": vae}


def _common(body: GenerationBody, model: str) -> dict[str, Any]:
    """The fields every request shares: copied from the schema, then A1111's own forms."""
    sampler, schedule = sampler_and_schedule(body)
    overrides = _overrides(body)
    return {
        **_sent(body, GenerationRequest),
        "sampler": sampler,
        "schedule": schedule,
        "model": overrides["model"] or model,
        "save": bool(body.save_images),
        "clip_skip": overrides["clip_skip"],
        "vae": overrides["vae"],
        # A1111's -1 (its default) and 0 both mean "no seed resize"; ours is 0.
        "seed_resize_from_w": max(0, body.seed_resize_from_w),
        "seed_resize_from_h": max(0, body.seed_resize_from_h),
        **adetailer_fields(body),
    }


def _request(cls: type[GenerationRequest], body: GenerationBody, common: dict[str, Any], **own: Any):
    """``cls`` from the shared fields, its own fields the body sends (``_sent``), and ``own`` (converted by hand)."""
    return cls(**{**common, **_sent(body, cls, beyond=GenerationRequest), **own})


def iterations(body: GenerationBody) -> int:
    if not 1 <= body.n_iter <= MAX_ITERATIONS:
        raise ValidationError("n_iter", f"n_iter must be between 1 and {MAX_ITERATIONS}, got {body.n_iter}")
    return body.n_iter


def _check_hires(body: Txt2ImgBody) -> None:
    """What SD Studio's hires fix cannot do is refused by name, never ignored."""
    for name in ("hr_checkpoint_name", "hr_sampler_name", "hr_scheduler"):
        if getattr(body, name) not in SAME_AS_FIRST_PASS:
            raise ValidationError(name, f"the hires pass uses the first pass's {name[3:]} in SD Studio: leave it out")
    for name, first in (("hr_prompt", body.prompt), ("hr_negative_prompt", body.negative_prompt)):
        if getattr(body, name) not in ("", first):
            raise ValidationError(name, f"the hires pass uses the first pass's prompts in SD Studio: leave {name} out")


def txt2img_request(body: Txt2ImgBody, model: str, limits: Limits) -> GenerationRequest:
    common = {**_common(body, model), **ip_adapter(body, limits)}  # an ip-adapter_* ControlNet unit's fields
    units = control_units(body, limits)
    if units:
        if body.enable_hr:
            raise ValidationError("enable_hr", "hires fix with ControlNet is not available in SD Studio yet")
        # The shared fields only: a txt2img body's denoising_strength is the hires pass's, not ControlNet's.
        return ControlNetRequest(**common, units=units, guess_mode=guess_mode(body), resize_mode=control_resize(body))
    if not body.enable_hr:
        return Txt2ImgRequest(**common)  # the hires fields (Txt2ImgRequest's own) act only with the hires fix
    _check_hires(body)
    # hr_resize_x/y, either one non-zero: the hires size instead of hr_scale, as in A1111 (copied from the schema).
    return _request(Txt2ImgRequest, body, common, hr_upscaler=body.hr_upscaler or "Latent")  # A1111's null: Latent


def img2img_request(body: Img2ImgBody, model: str, limits: Limits) -> GenerationRequest:
    common = {**_common(body, model), **ip_adapter(body, limits)}  # an ip-adapter_* ControlNet unit's fields
    if not body.init_images:
        raise ValidationError("init_images", "init_images must hold one base64 picture")
    image = decode_image(body.init_images[0], "init_images", limits.max_bytes, limits.max_pixels).convert("RGB")
    if body.resize_mode not in RESIZE_BY_NUMBER:
        raise ValidationError(
            "resize_mode", "resize_mode must be 0 (just resize), 1 (crop and resize), 2 (resize and fill)"
        )
    resize_mode = RESIZE_BY_NUMBER[body.resize_mode]
    strategy, unit_mask = inpaint_only(body, limits)  # the extension's inpaint_only unit: ControlNet inpaint
    units = () if strategy else control_units(body, limits)
    if body.mask is not None or unit_mask is not None:
        if units:
            raise ValidationError("alwayson_scripts.controlnet", "ControlNet with an inpaint mask is not available yet")
        mask = unit_mask if body.mask is None else decode_image(body.mask, "mask", limits.max_bytes, limits.max_pixels)
        mask = mask.convert("L")
        if body.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
        area = "Only masked" if body.inpaint_full_res else "Whole picture"
        own = {"image": image, "mask": mask, "resize_mode": resize_mode, "mask_blur": blur, "inpaint_area": area,
               **strategy}
        return _request(InpaintRequest, body, common, **own)
    if strategy:
        raise ValidationError("mask", "the inpaint_only ControlNet unit needs a mask: send mask (white = repaint)")
    if units:
        own = {"init_image": image, "resize_mode": resize_mode, "units": units, "guess_mode": guess_mode(body)}
        return _request(ControlNetRequest, body, common, **own)
    return _request(Img2ImgRequest, body, common, image=image, resize_mode=resize_mode)


def caller_field(field: str, request: GenerationRequest) -> str:
    base = field.rstrip("_0123456789")
    if isinstance(request, ControlNetRequest) and (base in CONTROL_FIELDS or base.startswith("guidance_")):
        return control_field(field)
    return rename(field)


def _info(results: list[GenerationResult], body: GenerationBody, interrupted: bool) -> dict[str, Any]:
    """A1111's ``info`` object: what ran, under A1111's keys (its response's shape, listed as A1111 lists it)."""
    images = [image for result in results for image in result.images]
    seeds = [seed for result in results for seed in result.seeds]
    # The variation seeds advance with the seeds, as A1111's all_subseeds do.
    subseeds = [sub for result in results for sub in batch_seeds(result.request.subseed, len(result.seeds))]
    ran = results[0].request if results else None
    # A txt2img request carries a hires strength even with the hires fix off; A1111 reports none then.
    strength = None if isinstance(ran, Txt2ImgRequest) and not ran.enable_hr else getattr(ran, "strength", None)
    return {
        "prompt": ran.prompt if ran else body.prompt,
        "all_prompts": [ran.prompt if ran else body.prompt] * len(images),
        "negative_prompt": ran.negative_prompt if ran else body.negative_prompt,
        "all_negative_prompts": [ran.negative_prompt if ran else body.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else body.seed,
        "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else body.subseed,
        "all_subseeds": subseeds,
        "subseed_strength": ran.subseed_strength if ran else body.subseed_strength,
        "seed_resize_from_w": ran.seed_resize_from_w if ran else body.seed_resize_from_w,
        "seed_resize_from_h": ran.seed_resize_from_h if ran else body.seed_resize_from_h,
        "width": ran.width if ran else body.width,
        "height": ran.height if ran else body.height,
        "sampler_name": ran.sampler if ran else body.sampler_name,
        "scheduler": ran.schedule if ran else body.scheduler,
        "cfg_scale": ran.guidance_scale if ran else body.cfg_scale,
        "steps": ran.steps if ran else body.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "sd_model_name": ran.model if ran else None,
        "sd_model_hash": None,
        "denoising_strength": strength,
        "index_of_first_image": 0,
        "infotexts": [text for result in results for text in result.infotexts],
        "styles": list(body.styles or []),
        "clip_skip": ran.clip_skip if ran else 1,
        "interrupted": interrupted,
        "warnings": [w for result in results for w in result.warnings],
        "saved": [p.name for result in results for p in result.paths],
    }


def response(results: list[GenerationResult], body: GenerationBody, interrupted: bool = False) -> dict[str, Any]:
    """A1111's ``{"images", "parameters", "info"}``; ``info`` is a JSON string as A1111 sends it."""
    info = _info(results, body, interrupted)
    parameters = body.model_dump(exclude={"init_images", "mask"} if isinstance(body, Img2ImgBody) else None)
    if isinstance(body, Img2ImgBody):
        parameters["init_images"] = None
        parameters["mask"] = None
    images = [image for result in results for image in result.images]
    encoded = [encode_png(image) for image in images] if body.send_images else []
    return {"images": encoded, "parameters": parameters, "info": json.dumps(info)}


def extras_upscaler(body: ExtrasBody) -> tuple[str, float]:
    """``extra-single-image`` → (upscaler, scale); face restoration and a second upscaler are refused by name."""
    for name in ("gfpgan_visibility", "codeformer_visibility", "extras_upscaler_2_visibility"):
        if getattr(body, name):
            raise ValidationError(name, f"{name} is not available in SD Studio: send 0")
    if body.resize_mode != 0:
        raise ValidationError("resize_mode", "only resize_mode 0 (scale by upscaling_resize) is available")
    # A1111's "None" upscaler still resizes to the asked size, with Lanczos.
    return ("Lanczos" if body.upscaler_1 == "None" else body.upscaler_1), body.upscaling_resize
