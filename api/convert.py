"""A1111 JSON bodies → SD Studio requests, and results → A1111 responses. No I/O, no server.

Errors are ``ValidationError(field, message)`` with A1111's field name, so a 422 names what the caller sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.images import RESIZE_MODES
from backend.outputs import png_info
from backend.requests import (
    ControlNetRequest,
    ControlUnit,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
    ValidationError,
)
from backend.samplers import SAMPLERS, SCHEDULES, split_legacy_name

from .models import ExtrasBody, GenerationBody, Img2ImgBody, Txt2ImgBody

# Our field names → the caller's, so a refusal from the backend's validator names the field the caller sent.
FIELD_NAMES = {
    "guidance_scale": "cfg_scale",
    "sampler": "sampler_name",
    "schedule": "scheduler",
    "strength": "denoising_strength",
    "image": "init_images",
    "model": "override_settings.sd_model_checkpoint",
    "padding": "inpaint_full_res_padding",
    "inpaint_area": "inpaint_full_res",
    "init_image": "init_images",
    "hr_steps": "hr_second_pass_steps",
}
CONTROL_FIELDS = {
    "control_type": "model",
    "conditioning_scale": "weight",
    "low_threshold": "threshold_a",
    "high_threshold": "threshold_b",
    "detect_resolution": "processor_res",
    "image": "image",
    "preprocessor": "module",
}
# The extension's preprocessor names → (control type, pose parts); "none" takes the picture as the map.
MODULES: dict[str, tuple[str, tuple[bool, bool, bool]]] = {
    "canny": ("canny", (True, False, False)),
    "depth": ("depth", (True, False, False)),
    "depth_midas": ("depth", (True, False, False)),
    "openpose": ("pose", (True, False, False)),
    "openpose_hand": ("pose", (True, True, False)),
    "openpose_face": ("pose", (True, False, True)),
    "openpose_faceonly": ("pose", (False, False, True)),
    "openpose_full": ("pose", (True, True, True)),
}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
CONTROL_RESIZE = {
    "just resize": "Just resize",
    "crop and resize": "Crop and resize",
    "resize and fill": "Resize and fill",
}
MAX_ITERATIONS = 16  # n_iter: each iteration is one engine run in the caller's one queue slot


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


def decode_image(data: Any, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """A base64 picture (optionally a data URL), checked by its header before its pixels are decoded."""
    if isinstance(data, dict):  # the extension also takes {"image": …, "mask": …}
        data = data.get("image")
    if not isinstance(data, str) or not data:
        raise ValidationError(field, f"{field} must be a base64-encoded picture")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) > max_bytes * 4 // 3 + 4:
        raise ValidationError(field, f"{field} is larger than this server's {max_bytes // 2**20} MB limit")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ValidationError(field, f"{field} is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > max_pixels:
                raise ValidationError(
                    field, f"{field} is {width}×{height}; this server takes at most {max_pixels:,} pixels"
                )
            image.load()
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError(field, f"{field} is not a readable picture (send a base64 PNG, JPEG or WebP)") from None
    return ImageOps.exif_transpose(image)


def encode_png(image: Image.Image) -> str:
    """A base64 PNG that keeps the picture's parameters, as A1111's API sends them."""
    buffer = io.BytesIO()
    text = image.info.get("parameters")
    image.save(buffer, format="PNG", pnginfo=png_info(text) if text else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Limits:
    max_bytes: int
    max_pixels: int


def _common(body: GenerationBody, model: str) -> dict[str, Any]:
    sampler, schedule = sampler_and_schedule(body)
    overrides = body.override_settings or {}
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise ValidationError("override_settings.sd_model_checkpoint", "sd_model_checkpoint must be a model name")
    clip_skip = overrides.get("CLIP_stop_at_last_layers", 1)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12:
        raise ValidationError(
            "override_settings.CLIP_stop_at_last_layers", "CLIP_stop_at_last_layers must be a whole number from 1 to 12"
        )
    return {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "seed": body.seed,
        "steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "batch_size": body.batch_size,
        "sampler": sampler,
        "schedule": schedule,
        "model": checkpoint or model,
        "styles": tuple(body.styles or ()),
        "save": bool(body.save_images),
        "clip_skip": clip_skip,
    }


def iterations(body: GenerationBody) -> int:
    if not 1 <= body.n_iter <= MAX_ITERATIONS:
        raise ValidationError("n_iter", f"n_iter must be between 1 and {MAX_ITERATIONS}, got {body.n_iter}")
    return body.n_iter


# What A1111's UI sends for "the same as the first pass" in the hires fields it has and SD Studio does not.
SAME_AS_FIRST_PASS = (None, "", "Use same checkpoint", "Use same sampler", "Use same scheduler")


def _hires_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """A1111's hires fix fields → the request's; what SD Studio cannot do is refused by name, never ignored."""
    for name in ("hr_checkpoint_name", "hr_sampler_name", "hr_scheduler"):
        if getattr(body, name) not in SAME_AS_FIRST_PASS:
            raise ValidationError(name, f"the hires pass uses the first pass's {name[3:]} in SD Studio: leave it out")
    for name, first in (("hr_prompt", body.prompt), ("hr_negative_prompt", body.negative_prompt)):
        if getattr(body, name) not in ("", first):
            raise ValidationError(name, f"the hires pass uses the first pass's prompts in SD Studio: leave {name} out")
    return {
        "enable_hr": True,
        "hr_scale": body.hr_scale,
        "hr_resize_x": body.hr_resize_x,  # either one non-zero: the hires size instead of hr_scale, as in A1111
        "hr_resize_y": body.hr_resize_y,
        "hr_upscaler": body.hr_upscaler or "Latent",  # A1111's default for the API's null
        "hr_steps": body.hr_second_pass_steps,
        "strength": 0.7 if body.denoising_strength is None else body.denoising_strength,
    }


def txt2img_request(body: Txt2ImgBody, model: str, limits: Limits) -> GenerationRequest:
    fields = _common(body, model)
    units = control_units(body, limits)
    if units:
        if body.enable_hr:
            raise ValidationError("enable_hr", "hires fix with ControlNet is not available in SD Studio yet")
        guess = _guess_mode(body)
        return ControlNetRequest(**fields, units=units, guess_mode=guess, resize_mode=_control_resize(body))
    if body.enable_hr:
        fields.update(_hires_fields(body))
    return Txt2ImgRequest(**fields)


RESIZE_BY_NUMBER = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize"}


def img2img_request(body: Img2ImgBody, model: str, limits: Limits) -> GenerationRequest:
    fields = _common(body, model)
    if not body.init_images:
        raise ValidationError("init_images", "init_images must hold one base64 picture")
    image = decode_image(body.init_images[0], "init_images", limits.max_bytes, limits.max_pixels).convert("RGB")
    if body.resize_mode not in RESIZE_BY_NUMBER:
        raise ValidationError(
            "resize_mode", "resize_mode must be 0 (just resize), 1 (crop and resize), 2 (resize and fill)"
        )
    resize_mode = RESIZE_BY_NUMBER[body.resize_mode]
    fields.update(strength=body.denoising_strength, resize_mode=resize_mode)
    units = control_units(body, limits)
    if body.mask is not None:
        if units:
            raise ValidationError("alwayson_scripts.controlnet", "ControlNet with an inpaint mask is not available yet")
        mask = decode_image(body.mask, "mask", limits.max_bytes, limits.max_pixels).convert("L")
        if body.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
        area = "Only masked" if body.inpaint_full_res else "Whole picture"
        return InpaintRequest(
            **fields, image=image, mask=mask, mask_blur=blur, inpaint_area=area, padding=body.inpaint_full_res_padding
        )
    if units:
        fields["resize_mode"] = resize_mode
        return ControlNetRequest(**fields, units=units, guess_mode=_guess_mode(body), init_image=image)
    return Img2ImgRequest(**fields, image=image)


def _control_args(body: GenerationBody) -> list[Any]:
    script = body.alwayson_scripts.get("controlnet") or body.alwayson_scripts.get("ControlNet")
    if script is None:
        return []
    args = script.get("args") if isinstance(script, dict) else None
    if not isinstance(args, list):
        raise ValidationError("alwayson_scripts.controlnet.args", "args must be a list of ControlNet units")
    return [unit for unit in args if not (isinstance(unit, dict) and unit.get("enabled", True) is False)]


def _unit_field(index: int, name: str) -> str:
    return f"alwayson_scripts.controlnet.args[{index}].{name}"


def _number(unit: dict[str, Any], key: str, default: float, index: int) -> float:
    value = unit.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(_unit_field(index, key), f"{key} must be a number, got {value!r}")
    return value


def control_units(body: GenerationBody, limits: Limits) -> tuple[ControlUnit, ...]:
    units = []
    for index, unit in enumerate(_control_args(body)):
        if not isinstance(unit, dict):
            raise ValidationError(_unit_field(index, "unit"), "each ControlNet unit must be an object")
        module = str(unit.get("module") or "none").lower()
        model = str(unit.get("model") or "None").lower()
        if module != "none" and module not in MODULES:
            raise ValidationError(
                _unit_field(index, "module"), f"unknown module {module!r}; choose one of: none, {', '.join(MODULES)}"
            )
        from_model = next((t for t in ("canny", "depth", "pose") if t in model), None)
        control_type = from_model or (MODULES[module][0] if module != "none" else None)
        if control_type is None:
            raise ValidationError(_unit_field(index, "model"), "name a ControlNet model (see /controlnet/model_list)")
        picture = unit.get("image", unit.get("input_image"))
        if picture in (None, ""):
            raise ValidationError(_unit_field(index, "image"), "each ControlNet unit needs an image")
        image = decode_image(picture, _unit_field(index, "image"), limits.max_bytes, limits.max_pixels).convert("RGB")
        body_part, hands, face = MODULES.get(module, ("", (True, False, False)))[1]
        resolution = int(_number(unit, "processor_res", -1, index))
        low = _number(unit, "threshold_a", -1, index)
        high = _number(unit, "threshold_b", -1, index)
        units.append(
            ControlUnit(
                image=image,
                control_type=control_type,
                preprocessor="none" if module == "none" else "auto",
                conditioning_scale=_number(unit, "weight", 1.0, index),
                guidance_start=_number(unit, "guidance_start", 0.0, index),
                guidance_end=_number(unit, "guidance_end", 1.0, index),
                low_threshold=int(low) if low > 0 else 100,  # the extension's -1 = the module's default
                high_threshold=int(high) if high > 0 else 200,
                detect_resolution=0 if unit.get("pixel_perfect") or resolution <= 0 else resolution,
                pose_body=body_part,
                pose_hands=hands,
                pose_face=face,
            )
        )
    return tuple(units)


def _guess_mode(body: GenerationBody) -> bool:
    """The extension's "ControlNet is more important" is closest to diffusers' guess mode (the map without a prompt)."""
    modes = [unit.get("control_mode", 0) for unit in _control_args(body) if isinstance(unit, dict)]
    return any(mode in (2, CONTROL_MODES[2]) for mode in modes)


def _control_resize(body: GenerationBody) -> str:
    for unit in _control_args(body):
        mode = unit.get("resize_mode") if isinstance(unit, dict) else None
        if isinstance(mode, int) and mode in (0, 1, 2):
            return RESIZE_MODES[(0, 1, 2).index(mode)] if mode != 2 else "Resize and fill"
        if isinstance(mode, str) and mode.lower() in CONTROL_RESIZE:
            return CONTROL_RESIZE[mode.lower()]
    return "Crop and resize"


def control_field(field: str) -> str:
    """A unit field from the backend (``control_type``, ``guidance_start_2``…) in the extension's words."""
    base, _, number = field.rpartition("_")
    index = int(number) - 1 if number.isdigit() and base else 0
    name = base if number.isdigit() and base else field
    return _unit_field(index, CONTROL_FIELDS.get(name, name))


def caller_field(field: str, request: GenerationRequest) -> str:
    base = field.rstrip("_0123456789")
    if isinstance(request, ControlNetRequest) and (base in CONTROL_FIELDS or base.startswith("guidance_")):
        return control_field(field)
    return rename(field)


def response(results: list[GenerationResult], body: GenerationBody, interrupted: bool = False) -> dict[str, Any]:
    """A1111's ``{"images", "parameters", "info"}``; ``info`` is a JSON string as A1111 sends it."""
    images = [image for result in results for image in result.images]
    seeds = [seed for result in results for seed in result.seeds]
    infotexts = [text for result in results for text in result.infotexts]
    ran = results[0].request if results else None
    # A txt2img request carries a hires strength even with the hires fix off; A1111 reports none then.
    strength = None if isinstance(ran, Txt2ImgRequest) and not ran.enable_hr else getattr(ran, "strength", None)
    info = {
        "prompt": ran.prompt if ran else body.prompt,
        "all_prompts": [ran.prompt if ran else body.prompt] * len(images),
        "negative_prompt": ran.negative_prompt if ran else body.negative_prompt,
        "all_negative_prompts": [ran.negative_prompt if ran else body.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else body.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "subseed_strength": 0,
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
        "infotexts": infotexts,
        "styles": list(body.styles or []),
        "clip_skip": 1,
        "interrupted": interrupted,
        "warnings": [w for result in results for w in result.warnings],
        "saved": [p.name for result in results for p in result.paths],
    }
    parameters = body.model_dump(exclude={"init_images", "mask"} if isinstance(body, Img2ImgBody) else None)
    if isinstance(body, Img2ImgBody):
        parameters["init_images"] = None
        parameters["mask"] = None
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
