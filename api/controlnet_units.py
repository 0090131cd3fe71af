"""The ControlNet extension's words → SD Studio's: ``alwayson_scripts.controlnet`` units, its preprocessor module
names, control and resize modes, and our unit fields back in its words for a refusal.

The extension's unit is its own format (numbers where -1 means "the module's default", a module *and* a model that
both name the control type), so it is read here by hand rather than from the request schema.
"""

from __future__ import annotations

from typing import Any

from backend.schema.choices import RESIZE_MODES
from backend.schema.errors import ValidationError
from backend.schema.inpaint_control import CONTROLNET_INPAINT, INPAINT_MODULE
from backend.schema.requests import ControlUnit

from .codec import Limits, decode_image
from .models import GenerationBody

IP_MODULE = "ip-adapter"  # the extension's IP-Adapter modules: ip-adapter_clip_sd15, ip-adapter_clip_sdxl, …
# What /controlnet/module_list names of them: any module starting with IP_MODULE is taken as one (our one image
# encoder folder serves every adapter file).
IP_MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith")

# ControlUnit's fields → the extension's names (a refusal names what the caller sent).
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


def _control_args(body: GenerationBody) -> list[Any]:
    script = body.alwayson_scripts.get("controlnet") or body.alwayson_scripts.get("ControlNet")
    if script is None:
        return []
    args = script.get("args") if isinstance(script, dict) else None
    if not isinstance(args, list):
        raise ValidationError("alwayson_scripts.controlnet.args", "args must be a list of ControlNet units")
    return [unit for unit in args if not (isinstance(unit, dict) and unit.get("enabled", True) is False)]


def _is_ip_adapter(unit: Any) -> bool:
    return isinstance(unit, dict) and str(unit.get("module", "")).lower().startswith(IP_MODULE)


def _unit_field(index: int, name: str) -> str:
    return f"alwayson_scripts.controlnet.args[{index}].{name}"


def _number(unit: dict[str, Any], key: str, default: float, index: int) -> float:
    value = unit.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(_unit_field(index, key), f"{key} must be a number, got {value!r}")
    return value


def _control_type(unit: dict[str, Any], index: int) -> tuple[str, str]:
    """(module, control type): the model's name says the type, else the module's."""
    module = str(unit.get("module") or "none").lower()
    if module == INPAINT_MODULE:
        raise ValidationError(_unit_field(index, "module"), f"{INPAINT_MODULE} works in img2img with a mask (the "
                              "body's mask, or the unit's), alone: it is SD Studio's ControlNet inpaint strategy")
    model = str(unit.get("model") or "None").lower()
    if module != "none" and module not in MODULES:
        raise ValidationError(
            _unit_field(index, "module"), f"unknown module {module!r}; choose one of: none, {', '.join(MODULES)}"
        )
    from_model = next((t for t in ("canny", "depth", "pose") if t in model), None)
    control_type = from_model or (MODULES[module][0] if module != "none" else None)
    if control_type is None:
        raise ValidationError(_unit_field(index, "model"), "name a ControlNet model (see /controlnet/model_list)")
    return module, control_type


def _unit(unit: Any, index: int, limits: Limits) -> ControlUnit:
    if not isinstance(unit, dict):
        raise ValidationError(_unit_field(index, "unit"), "each ControlNet unit must be an object")
    module, control_type = _control_type(unit, index)
    picture = unit.get("image", unit.get("input_image"))
    if picture in (None, ""):
        raise ValidationError(_unit_field(index, "image"), "each ControlNet unit needs an image")
    image = decode_image(picture, _unit_field(index, "image"), limits.max_bytes, limits.max_pixels).convert("RGB")
    body_part, hands, face = MODULES.get(module, ("", (True, False, False)))[1]
    resolution = int(_number(unit, "processor_res", -1, index))
    low = _number(unit, "threshold_a", -1, index)
    high = _number(unit, "threshold_b", -1, index)
    return ControlUnit(
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


def control_units(body: GenerationBody, limits: Limits) -> tuple[ControlUnit, ...]:
    """The enabled units of ``alwayson_scripts.controlnet`` (none: no ControlNet)."""
    units = enumerate(_control_args(body))
    return tuple(_unit(unit, index, limits) for index, unit in units if not _is_ip_adapter(unit))


def guess_mode(body: GenerationBody) -> bool:
    """The extension's "ControlNet is more important" is closest to diffusers' guess mode (the map without a prompt)."""
    modes = [unit.get("control_mode", 0) for unit in _control_args(body) if isinstance(unit, dict)]
    return any(mode in (2, CONTROL_MODES[2]) for mode in modes)


def control_resize(body: GenerationBody) -> str:
    """The first unit's resize mode (a number or the extension's label), as the request's."""
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


def inpaint_only(body: GenerationBody, limits: Limits) -> tuple[dict[str, Any], Any]:
    """The ControlNet extension's ``inpaint_only`` unit as the inpaint request's fields, and the unit's own mask
    (None: none sent). ({}, None) when no enabled unit has that module."""
    units = [unit for unit in _control_args(body) if not _is_ip_adapter(unit)]
    found = [i for i, u in enumerate(units) if isinstance(u, dict) and str(u.get("module")).lower() == INPAINT_MODULE]
    if not found:
        return {}, None
    if len(units) > 1:
        raise ValidationError(_unit_field(found[0], "module"), f"{INPAINT_MODULE} runs alone: send no other unit")
    for name, default in (("weight", 1.0), ("guidance_start", 0.0), ("guidance_end", 1.0)):
        if _number(units[0], name, default, 0) != default:  # the strategy runs the unit at the extension's defaults
            raise ValidationError(_unit_field(0, name), f"{INPAINT_MODULE} runs at {name} {default:g}: send that")
    mask = units[0].get("mask", units[0].get("mask_image"))
    if isinstance(mask, dict):  # the extension's {"image": …, "mask": …} form
        mask = mask.get("mask")
    if mask not in (None, ""):
        mask = decode_image(mask, _unit_field(0, "mask"), limits.max_bytes, limits.max_pixels).convert("L")
    return {"inpaint_strategy": CONTROLNET_INPAINT}, mask or None


def ip_adapter(body: GenerationBody, limits: Limits) -> dict[str, Any]:
    """The request's IP-Adapter fields from the extension's ``ip-adapter_*`` unit ({} without one): its model
    ("ip-adapter_sd15 [hash]" names models/ipadapter/ip-adapter_sd15.safetensors), weight and picture(s)."""
    found = [(i, u) for i, u in enumerate(_control_args(body)) if _is_ip_adapter(u)]
    if not found:
        return {}
    index, unit = found[0]
    if len(found) > 1:
        raise ValidationError(_unit_field(found[1][0], "module"), "one IP-Adapter unit at a time")
    model = str(unit.get("model") or "").split(" [")[0].strip()
    if model in ("", "none", "None"):
        raise ValidationError(_unit_field(index, "model"), "name the IP-Adapter model (a file in models/ipadapter)")
    pictures = unit.get("image", unit.get("input_image"))
    pictures = pictures if isinstance(pictures, list) else [pictures]
    if not pictures or any(p in (None, "") for p in pictures):
        raise ValidationError(_unit_field(index, "image"), "the IP-Adapter unit needs a reference picture")
    where = _unit_field(index, "image")
    images = tuple(decode_image(p, where, limits.max_bytes, limits.max_pixels).convert("RGB") for p in pictures)
    return {"ip_adapter": model, "ip_adapter_weight": _number(unit, "weight", 1.0, index), "ip_adapter_image": images}
