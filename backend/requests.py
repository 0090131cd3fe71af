"""Typed requests and results, and the one place where requests are validated.

Every limit comes from ``Settings`` through ``field_limits`` so the UI's sliders and the validator
agree. Sizes that are not multiples of 8 are rejected (never silently rounded), with the two nearest
valid values in the message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .annotators import CONTROL_TYPES, MIN_DETECT_RESOLUTION, PREPROCESSORS
from .devices import check_cost
from .images import SIZE_MULTIPLE
from .outpaint import FILLS as OUTPAINT_FILLS
from .outpaint import Margins, run_size
from .samplers import DEFAULT_SAMPLER, DEFAULT_SCHEDULE, SAMPLERS, supported_schedules
from .settings import Settings

MAX_PROMPT_CHARS = 4000
MAX_HR_SCALE = 8  # hires fix: the second pass at most this many times the first pass's size, per side
NEGATIVE_MARK = "Negative prompt:"  # the infotext line that starts the negative prompt (backend.infotext)


class ValidationError(ValueError):
    """A request field is out of range or malformed; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Limit:
    minimum: float
    maximum: float
    step: float = 1


def field_limits(settings: Settings) -> dict[str, Limit]:
    return {
        "steps": Limit(1, settings.max_steps),
        "guidance_scale": Limit(0.0, settings.max_guidance, 0.5),
        "width": Limit(64, settings.max_width, SIZE_MULTIPLE),
        "height": Limit(64, settings.max_height, SIZE_MULTIPLE),
        "batch_size": Limit(1, settings.max_batch),
        "seed": Limit(-1, 2**32 - 1),
        "strength": Limit(0.0, 1.0, 0.01),
        "mask_blur": Limit(0, 64),
        "padding": Limit(0, 256),
        "conditioning_scale": Limit(0.0, 2.0, 0.05),
        "guidance_start": Limit(0.0, 1.0, 0.01),
        "guidance_end": Limit(0.0, 1.0, 0.01),
        "low_threshold": Limit(1, 255),
        "high_threshold": Limit(1, 255),
        "clip_skip": Limit(1, 12),
        "skip_cfg_after": Limit(0.05, 1.0, 0.05),
        "deep_cache": Limit(1, 10),
        "detect_resolution": Limit(0, max(settings.max_width, settings.max_height), MIN_DETECT_RESOLUTION),
        "outpaint": Limit(0, max(settings.max_width, settings.max_height), SIZE_MULTIPLE),
    }


@dataclass
class GenerationRequest:
    """Fields every task shares. ``seed=-1`` asks for a random seed; ``model=""`` the default model."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    guidance_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    sampler: str = DEFAULT_SAMPLER
    schedule: str = DEFAULT_SCHEDULE
    model: str = ""
    styles: tuple[str, ...] = ()  # applied to the prompts by the engine; the infotext has the result
    save: bool = True  # write the pictures to the output folder (when the server saves at all)
    vae: str = ""  # "" = the model's own VAE; else a file of the VAE folders by name (backend.checkpoints)
    clip_skip: int = 1  # A1111's: 2 = the text encoder's last layer left out
    skip_cfg_after: float = 1.0  # fraction of the steps with CFG; the rest skip the uncond pass (1 = never skip)
    deep_cache: int = 1  # DeepCache: the UNet's deep blocks run every Nth step, reused between (1 = every step)

    task: ClassVar[str] = "generation"

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass
class Txt2ImgRequest(GenerationRequest):
    """``enable_hr``: A1111's hires fix. Generate at width×height, upscale by ``hr_scale`` with ``hr_upscaler``
    (a latent mode, Lanczos or a model file, backend.upscalers), then an img2img pass of ``hr_steps`` (0 = ``steps``) at
    denoising ``strength`` on the larger picture.

    ``hr_resize_x``/``hr_resize_y`` (A1111's "Resize width/height to"; 0 = not set) give the hires size instead of
    ``hr_scale``: one side alone keeps the base aspect ratio; both, of another aspect ratio, upscale to cover that size
    and keep its middle (A1111's crop)."""

    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Lanczos"
    hr_steps: int = 0
    strength: float = 0.7  # the hires pass's denoising strength
    hr_resize_x: int = 0
    hr_resize_y: int = 0

    task: ClassVar[str] = "txt2img"

    @property
    def latent_hires(self) -> bool:
        """The hires fix resizes the first pass's latents (A1111's "Latent …" upscalers), not its pictures."""
        return self.enable_hr and self.hr_upscaler.startswith("Latent")

    @property
    def hires_resize(self) -> bool:
        """The hires size is given (``hr_resize_x``/``hr_resize_y``), not a scale."""
        return bool(self.hr_resize_x or self.hr_resize_y)

    def hires_size(self) -> tuple[int, int]:
        """The second pass's size: the base size × ``hr_scale``, or the resize size (a missing side follows the
        base aspect ratio), rounded down to multiples of 8."""
        if self.hires_resize:
            x, y = self.hr_resize_x, self.hr_resize_y
            size = (x or y * self.width // self.height, y or x * self.height // self.width)
        else:
            size = (int(self.width * self.hr_scale), int(self.height * self.hr_scale))
        return size[0] // SIZE_MULTIPLE * SIZE_MULTIPLE, size[1] // SIZE_MULTIPLE * SIZE_MULTIPLE

    def hires_upscale_size(self) -> tuple[int, int]:
        """What the first pass's picture is upscaled to: the hires size, or, for a resize size of another aspect
        ratio, the base aspect ratio's size that covers it (A1111's rule; ``hires_crop`` then takes its middle)."""
        if not (self.hr_resize_x and self.hr_resize_y):
            return self.hires_size()
        x, y = self.hr_resize_x, self.hr_resize_y
        if self.width / self.height < x / y:
            return x, x * self.height // self.width
        return y * self.width // self.height, y

    def hires_crop(self) -> tuple[int, int]:
        """(left, top) of the hires size in the upscaled picture: the middle, in steps of 8 pixels as A1111 crops
        latents."""
        cover, size = self.hires_upscale_size(), self.hires_size()
        return tuple((c - s) // SIZE_MULTIPLE // 2 * SIZE_MULTIPLE for c, s in zip(cover, size, strict=True))


@dataclass
class Img2ImgRequest(GenerationRequest):
    """``width``/``height`` 0 = the input image's size rounded to multiples of 8."""

    image: Any = None  # PIL image
    strength: float = 0.75  # 0 keeps the image, 1 ignores it
    resize_mode: str = "Just resize"
    width: int = 0
    height: int = 0

    task: ClassVar[str] = "img2img"


@dataclass
class InpaintRequest(Img2ImgRequest):
    """``mask`` white = repaint. ``inpaint_area`` "Only masked" works on a padded crop around the mask."""

    mask: Any = None  # PIL image
    mask_blur: int = 4
    inpaint_area: str = "Whole picture"
    padding: int = 32
    # Outpainting: grow the picture by these many pixels per side (backend.outpaint). The output is the grown
    # picture at its own size (width/height are set from it), the old pixels unchanged; the mask may then be empty.
    outpaint_left: int = 0
    outpaint_right: int = 0
    outpaint_up: int = 0
    outpaint_down: int = 0
    outpaint_fill: str = "Blurred edge"

    task: ClassVar[str] = "inpaint"

    @property
    def margins(self) -> Margins:
        return Margins(self.outpaint_left, self.outpaint_right, self.outpaint_up, self.outpaint_down)


INPAINT_AREAS = ("Whole picture", "Only masked")


@dataclass
class ControlUnit:
    """One ControlNet: its reference picture, how that becomes a control map, and how strongly it steers."""

    image: Any = None  # PIL image: a picture to preprocess, or a ready control map (preprocessor "none")
    control_type: str = "canny"  # which ControlNet: canny | depth | pose
    preprocessor: str = "auto"  # auto: the control type's detector; none: ``image`` already is the map
    conditioning_scale: float = 1.0  # 0 = no effect
    guidance_start: float = 0.0  # fraction of the steps where the ControlNet starts acting
    guidance_end: float = 1.0  # … and where it stops
    low_threshold: int = 100  # canny
    high_threshold: int = 200  # canny
    detect_resolution: int = 0  # the detector's working short side; 0 = the output's
    pose_body: bool = True
    pose_hands: bool = False
    pose_face: bool = False

    def replace(self, **changes: Any) -> ControlUnit:
        return dataclasses.replace(self, **changes)


@dataclass
class ControlNetRequest(GenerationRequest):
    """ControlNet from noise, or from ``init_image`` with ``strength`` (img2img). Several units steer together.

    ``width``/``height`` 0 = the size of the init image if there is one, else of the first unit's picture.
    """

    units: tuple[ControlUnit, ...] = ()
    guess_mode: bool = False  # the ControlNet sees no prompt: it recognises the content from the map alone
    init_image: Any = None  # PIL image; None = start from noise
    strength: float = 0.75
    resize_mode: str = "Crop and resize"  # how pictures and maps are fitted to the output size
    width: int = 0
    height: int = 0

    task: ClassVar[str] = "controlnet"


@dataclass
class GenerationResult:
    images: list[Any]  # PIL images
    seeds: list[int]
    infotexts: list[str]
    request: GenerationRequest  # as run: seed resolved, model named
    paths: list[Path] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # task-specific, e.g. the inpaint mask used
    warnings: list[str] = field(default_factory=list)  # what the user should know, e.g. pictures not saved
    seconds: float = 0.0  # the run's wall time, queue wait excluded

    @property
    def infotext(self) -> str:
        return self.infotexts[0] if self.infotexts else ""


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
    from .images import RESIZE_MODES, binary_mask, size_from_image

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
        _in_range(name, changes[name], limits["outpaint"])
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
    from .images import RESIZE_MODES, size_from_image

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
    from .upscalers import hires_upscaler_names  # imports this module

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
    for name in ("seed", "steps", "width", "height", "batch_size", "clip_skip", "deep_cache"):
        if name in changes:
            continue
        changes[name] = _whole(name, getattr(request, name))
        _in_range(name, changes[name], limits[name])
    changes["guidance_scale"] = _real("guidance_scale", request.guidance_scale)
    _in_range("guidance_scale", changes["guidance_scale"], limits["guidance_scale"])
    changes["skip_cfg_after"] = _real("skip_cfg_after", request.skip_cfg_after)
    _in_range("skip_cfg_after", changes["skip_cfg_after"], limits["skip_cfg_after"])
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
    if request.sampler not in SAMPLERS:
        raise ValidationError("sampler", f"unknown sampler {request.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    schedules = supported_schedules(request.sampler)
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
