"""The one place where requests are validated: a normalised copy, or ``ValidationError`` naming the bad field.

Every limit comes from ``Settings`` through ``field_limits`` so the UI's sliders and the validator agree. Sizes that
are not multiples of 8 are rejected (never silently rounded), with the two nearest valid values in the message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from backend.models.devices import pixel_step_limit
from backend.models.upscaler_files import hires_upscaler_names
from backend.schema.choices import (
    CONTROL_TYPES,
    INPAINT_AREAS,
    MAX_HR_SCALE,
    MAX_PROMPT_CHARS,
    MIN_DETECT_RESOLUTION,
    NEGATIVE_MARK,
    OUTPAINT_FILLS,
    PREPROCESSORS,
    RESIZE_MODES,
    SIZE_MULTIPLE,
)
from backend.schema.errors import ValidationError
from backend.schema.fields import Limit, specs
from backend.schema.geometry import Margins, binary_mask, run_size, size_from_image
from backend.schema.requests import (
    ControlNetRequest,
    ControlUnit,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
    field_limits,
)
from backend.schema.samplers import known_samplers, known_schedules
from backend.settings import Settings


def check_cost(pixel_steps: int, settings: Settings, what: str) -> None:
    """Refuse work over the cap before it starts; ``what`` says how the request adds up."""
    limit = pixel_step_limit(settings)
    if pixel_steps > limit:
        raise ValidationError(
            "steps",
            f"{what} = {_amount(pixel_steps)} pixel-steps; this server takes at most {_amount(limit)} per request: "
            "lower the size, steps or batch size (server owner: SDSTUDIO_MAX_PIXEL_STEPS)",
        )


def _amount(pixel_steps: int) -> str:
    return f"{pixel_steps / 1e6:,.1f} M" if pixel_steps >= 1e6 else f"{pixel_steps:,}"


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise ValidationError(name, f"{name} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(name, f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ValidationError(name, f"{name} must be a whole number, got {value!r}")
    return int(number)


def _real(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(name, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValidationError(name, f"{name} must be a finite number, got {value!r}")
    return number


def _in_range(name: str, value: float, limit: Limit) -> None:
    if not limit.minimum <= value <= limit.maximum:
        lo, hi, got = (_number(v) for v in (limit.minimum, limit.maximum, value))
        raise ValidationError(name, f"{name} must be between {lo} and {hi}, got {got}")


def _number(value: float) -> str:
    """Whole numbers without a decimal point or exponent (seeds are large), others as written."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValidationError(name, f"{name} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if "\x00" in value:
        raise ValidationError(name, f"{name} contains a NUL character: remove it")
    # In the saved parameters such a line would start (or restart) the negative prompt, so PNG info would read
    # back another request than the one that ran. The negative prompt's own first line follows the mark anyway.
    lines = value.split("\n")[1:] if name == "negative_prompt" else value.split("\n")
    if any(line.startswith(NEGATIVE_MARK) for line in lines):
        raise ValidationError(
            name, f"{name} has a line starting with {NEGATIVE_MARK!r}: put the negative prompt in its own box"
        )
    return value


def _validate_image_fields(request: Img2ImgRequest, settings: Settings, limits: dict[str, Limit]) -> dict[str, Any]:
    if request.image is None or not hasattr(request.image, "size"):
        raise ValidationError("image", "upload an image to start from")
    changes: dict[str, Any] = {"strength": _validate_strength(request.strength, request.steps, limits)}
    if request.resize_mode not in RESIZE_MODES:
        raise ValidationError("resize_mode", f"resize_mode must be one of: {', '.join(RESIZE_MODES)}")
    auto = size_from_image(request.image, settings.max_width, settings.max_height)
    for index, name in enumerate(("width", "height")):
        value = _whole(name, getattr(request, name))
        if value != 0:
            _in_range(name, value, limits[name])
        changes[name] = value or auto[index]
    if isinstance(request, InpaintRequest):
        outpainting = _validate_outpaint(request, settings, limits, changes)
        if not outpainting and (request.mask is None or not hasattr(request.mask, "size")):
            raise ValidationError("mask", "paint the area to repaint (or upload a mask: white = repaint)")
        # Aligned to the image whatever size it came at (editors may return a smaller canvas).
        if request.mask is not None and hasattr(request.mask, "size"):
            changes["mask"] = binary_mask(request.mask, request.image.size)
        if not outpainting and changes["mask"].getextrema()[1] == 0:
            raise ValidationError("mask", "the mask is empty: paint the area to repaint")
        for name in ("mask_blur", "padding"):
            changes[name] = _whole(name, getattr(request, name))
            _in_range(name, changes[name], limits[name])
        if request.inpaint_area not in INPAINT_AREAS:
            raise ValidationError("inpaint_area", f"inpaint_area must be one of: {', '.join(INPAINT_AREAS)}")
    return changes


def _validate_outpaint(
    request: InpaintRequest, settings: Settings, limits: dict[str, Limit], changes: dict[str, Any]
) -> bool:
    """Check the outpaint fields; when outpainting, the run size is the grown picture's (set in ``changes``)."""
    names = ("outpaint_left", "outpaint_right", "outpaint_up", "outpaint_down")
    for name in names:
        changes[name] = _whole(name, getattr(request, name))
        _in_range(name, changes[name], limits[name])
    margins = Margins(*(changes[name] for name in names))
    if not margins.any():
        return False
    if request.outpaint_fill not in OUTPAINT_FILLS:
        raise ValidationError("outpaint_fill", f"outpaint_fill must be one of: {', '.join(OUTPAINT_FILLS)}")
    size = run_size(request.image.size, margins)
    for index, (name, sides, words) in enumerate(
        (("width", names[:2], "left and right"), ("height", names[2:], "up and down"))
    ):
        field = sides[1] if changes[sides[1]] else sides[0]  # a side the user asked to grow, where there is one
        limit = limits[name]
        if size[index] > limit.maximum:
            room = max(0, int(limit.maximum) - request.image.size[index]) // SIZE_MULTIPLE * SIZE_MULTIPLE
            raise ValidationError(
                field,
                f"outpainting makes the {name} {size[index]}, above the limit {_number(limit.maximum)}: "
                f"grow the picture by at most {room} px {words} together",
            )
        if size[index] < limit.minimum:
            raise ValidationError(
                field, f"outpainting makes the {name} {size[index]}, below {_number(limit.minimum)}: grow it more"
            )
    if size[0] * size[1] > settings.max_image_pixels:
        raise ValidationError(
            names[1] if margins.right else names[0],
            f"outpainting makes {size[0]}×{size[1]}, more than the {settings.max_image_pixels} pixels allowed: "
            "grow the picture less",
        )
    changes["width"], changes["height"] = size
    return True


def _validate_strength(strength: Any, steps: Any, limits: dict[str, Limit]) -> float:
    value = _real("strength", strength)
    _in_range("strength", value, limits["strength"])
    steps = _whole("steps", steps)
    if int(steps * value) < 1:
        # The pipelines run int(steps × strength) denoising steps; zero steps is no picture at all.
        lowest = math.ceil(100 / max(steps, 1)) / 100
        raise ValidationError(
            "strength",
            f"strength {value:g} with {steps} steps runs no denoising step: use strength {lowest:g} "
            "or more, or more steps",
        )
    return value


def _validate_unit(unit: ControlUnit, index: int, limits: dict[str, Limit], first_image: Any) -> ControlUnit:
    def name(field_name: str) -> str:  # the API keyword: unit 1's fields are plain, unit 2's end in _2
        return field_name if index == 0 else f"{field_name}_{index + 1}"

    image = unit.image if unit.image is not None else first_image
    if image is None or not hasattr(image, "size"):
        raise ValidationError(name("image"), "upload a reference picture for the ControlNet")
    if unit.control_type not in CONTROL_TYPES:
        raise ValidationError(
            name("control_type"), f"control type must be one of: {', '.join(CONTROL_TYPES)}; got {unit.control_type!r}"
        )
    if unit.preprocessor not in PREPROCESSORS:
        raise ValidationError(name("preprocessor"), f"preprocessor must be one of: {', '.join(PREPROCESSORS)}")
    changes: dict[str, Any] = {"image": image}
    for field_name in ("conditioning_scale", "guidance_start", "guidance_end"):
        changes[field_name] = _real(name(field_name), getattr(unit, field_name))
        _in_range(name(field_name), changes[field_name], limits[field_name])
    if changes["guidance_start"] >= changes["guidance_end"]:
        raise ValidationError(
            name("guidance_start"),
            f"guidance start ({changes['guidance_start']:g}) must be below guidance end ({changes['guidance_end']:g})",
        )
    for field_name in ("low_threshold", "high_threshold", "detect_resolution"):
        changes[field_name] = _whole(name(field_name), getattr(unit, field_name))
        _in_range(name(field_name), changes[field_name], limits[field_name])
    if 0 < changes["detect_resolution"] < MIN_DETECT_RESOLUTION:
        raise ValidationError(
            name("detect_resolution"),
            f"detect resolution must be 0 (the output size) or at least {MIN_DETECT_RESOLUTION}, "
            f"got {changes['detect_resolution']}",
        )
    if changes["low_threshold"] > changes["high_threshold"]:
        raise ValidationError(name("low_threshold"), "the canny low threshold must not be above the high threshold")
    for field_name in ("pose_body", "pose_hands", "pose_face"):
        changes[field_name] = bool(getattr(unit, field_name))
    return unit.replace(**changes)


def _validate_controlnet_fields(
    request: ControlNetRequest, settings: Settings, limits: dict[str, Limit]
) -> dict[str, Any]:
    if not request.units:
        raise ValidationError("control_type", "add at least one ControlNet unit")
    first = request.units[0].image
    units = tuple(_validate_unit(unit, i, limits, first) for i, unit in enumerate(request.units))
    changes: dict[str, Any] = {"units": units, "guess_mode": bool(request.guess_mode)}
    if request.init_image is not None:
        if not hasattr(request.init_image, "size"):
            raise ValidationError("init_image", "the init image must be a picture")
        changes["strength"] = _validate_strength(request.strength, request.steps, limits)
    if request.resize_mode not in RESIZE_MODES:
        raise ValidationError("resize_mode", f"resize_mode must be one of: {', '.join(RESIZE_MODES)}")
    sized_by = request.init_image if request.init_image is not None else units[0].image
    auto = size_from_image(sized_by, settings.max_width, settings.max_height)
    for index, name in enumerate(("width", "height")):
        value = _whole(name, getattr(request, name))
        if value != 0:
            _in_range(name, value, limits[name])
        changes[name] = value or auto[index]
    return changes


def _validate_hires(
    request: Txt2ImgRequest, changes: dict[str, Any], settings: Settings, limits: dict[str, Limit]
) -> dict[str, Any]:
    scale = _real("hr_scale", request.hr_scale)
    width, height = changes["width"], changes["height"]
    resize = {name: _whole(name, getattr(request, name)) for name in ("hr_resize_x", "hr_resize_y")}
    sized = request.replace(width=width, height=height, hr_scale=scale, **resize)
    if sized.hires_resize:  # A1111 then ignores hr_scale
        _validate_resize(sized, limits)
    elif not 1.0 <= scale <= MAX_HR_SCALE:
        raise ValidationError("hr_scale", f"hr_scale (Hires upscale) must be between 1 and 8, got {_number(scale)}")
    target = sized.hires_size()
    for name, value, base in zip(("width", "height"), target, (width, height), strict=True):
        if value > limits[name].maximum and not sized.hires_resize:
            most = math.floor(limits[name].maximum / base * 100) / 100
            raise ValidationError(
                "hr_scale",
                f"hires fix makes the {name} {value}, above the limit {_number(limits[name].maximum)}: "
                f"lower Hires upscale to at most {most:g}",
            )
    steps = _whole("hr_steps", request.hr_steps)
    if steps != 0:
        _in_range("hr_steps", steps, limits["steps"])
    choices = hires_upscaler_names(settings)
    if request.hr_upscaler not in choices:
        raise ValidationError(
            "hr_upscaler", f"unknown Hires upscaler {request.hr_upscaler!r}; choose one of: {', '.join(choices)}"
        )
    strength = _validate_strength(request.strength, steps or changes["steps"], limits)
    hr_steps = steps or changes["steps"]
    check_cost(
        target[0] * target[1] * hr_steps * changes["batch_size"],
        settings,
        f"hires pass {target[0]}×{target[1]} × {hr_steps} steps × {changes['batch_size']} pictures",
    )
    return {"hr_scale": scale, "hr_steps": steps, "strength": strength, **resize}


def _validate_resize(request: Txt2ImgRequest, limits: dict[str, Limit]) -> None:
    """``hr_resize_x``/``hr_resize_y``: each 0 or a valid size; the sizes they make within the limits and, as for
    ``hr_scale``, between 1 and 8 times the first pass's size. A refusal names the field the caller set."""
    for name, side in (("hr_resize_x", "width"), ("hr_resize_y", "height")):
        value = getattr(request, name)
        if value == 0:
            continue
        lo, hi = (_number(v) for v in (limits[side].minimum, limits[side].maximum))
        if not limits[side].minimum <= value <= limits[side].maximum:
            raise ValidationError(name, f"{name} must be 0 (not set) or between {lo} and {hi}, got {value}")
        if value % SIZE_MULTIPLE:
            lower = value - value % SIZE_MULTIPLE
            raise ValidationError(
                name, f"{name} {value} is not a multiple of {SIZE_MULTIPLE}: use {lower} or {lower + SIZE_MULTIPLE}"
            )
    given = "hr_resize_x" if request.hr_resize_x else "hr_resize_y"
    asked = f"Hires resize {request.hr_resize_x}x{request.hr_resize_y} from {request.width}×{request.height}"
    cover = request.hires_upscale_size()
    for what, size in (("hires", request.hires_size()), ("upscaled (before the crop)", cover)):
        for index, side in enumerate(("width", "height")):
            if size[index] > limits[side].maximum:
                most = _number(limits[side].maximum)
                raise ValidationError(given, f"{asked} makes the {what} {side} {size[index]}, above the limit {most}")
    base = (request.width, request.height)
    if any(c < b for c, b in zip(cover, base, strict=True)):
        raise ValidationError(given, f"{asked} is smaller than the first pass: the hires fix makes pictures larger")
    if any(c > MAX_HR_SCALE * b for c, b in zip(cover, base, strict=True)):
        raise ValidationError(
            given, f"{asked} is more than {MAX_HR_SCALE} times the first pass's size (Hires upscale's limit)"
        )


def validate(request: GenerationRequest, settings: Settings, models: Iterable[str] = ()) -> GenerationRequest:
    """Return a normalised copy of ``request`` or raise ``ValidationError`` naming the bad field."""
    limits = field_limits(settings)
    changes: dict[str, Any] = {
        "prompt": _text("prompt", request.prompt),
        "negative_prompt": _text("negative_prompt", request.negative_prompt),
        "styles": tuple(request.styles or ()),
    }
    if isinstance(request, Img2ImgRequest):
        changes.update(_validate_image_fields(request, settings, limits))
    elif isinstance(request, ControlNetRequest):
        changes.update(_validate_controlnet_fields(request, settings, limits))
    hires = isinstance(request, Txt2ImgRequest) and bool(request.enable_hr)
    if isinstance(request, Txt2ImgRequest):
        changes["enable_hr"] = hires
    for item, meta in specs(GenerationRequest):  # every shared number field, by its declared type and limit
        if meta.limit is None or item.name in changes:
            continue
        read = _whole if item.type == "int" else _real
        changes[item.name] = read(item.name, getattr(request, item.name))
        _in_range(item.name, changes[item.name], limits[item.name])
    if changes["deep_cache"] > 1 and settings.compile_unet:
        # The compiled graph would bypass DeepCache's per-block wrappers (or recompile on every step).
        raise ValidationError(
            "deep_cache", "DeepCache cannot run on this server's compiled UNet (SDSTUDIO_COMPILE_UNET): use interval 1"
        )
    for name in ("width", "height"):
        value = changes[name]
        if value % SIZE_MULTIPLE:
            lower = value - value % SIZE_MULTIPLE
            raise ValidationError(
                name,
                f"{name} {value} is not a multiple of {SIZE_MULTIPLE}: use {lower} or {lower + SIZE_MULTIPLE}",
            )
    # Any table's names here; whether the model's family has the pair is its own question (Family.unsupported).
    if request.sampler not in known_samplers():
        raise ValidationError(
            "sampler", f"unknown sampler {request.sampler!r}; choose one of: {', '.join(known_samplers())}"
        )
    schedules = known_schedules(request.sampler)
    if request.schedule not in schedules:
        raise ValidationError(
            "schedule",
            f"sampler {request.sampler!r} does not support schedule {request.schedule!r}; "
            f"choose one of: {', '.join(schedules)}",
        )
    steps, batch = changes["steps"], changes["batch_size"]
    width, height = changes["width"], changes["height"]
    check_cost(width * height * steps * batch, settings, f"{width}×{height} × {steps} steps × {batch} pictures")
    if hires:
        changes.update(_validate_hires(request, changes, settings, limits))
    names = list(models)
    if names and request.model and request.model not in names:
        raise ValidationError("model", f"unknown model {request.model!r}; choose one of: {', '.join(names)}")
    return dataclasses.replace(request, **changes)
