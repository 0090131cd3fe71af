"""Per-task preparation: a validated request → pipeline arguments, a post-process, infotext extras.

One small function per task; the engine runs them all the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from backend.generation import inpaint_control
from backend.images import outpaint
from backend.images.ops import blend_back, blur_mask, resize
from backend.schema.inpaint_control import INPAINT_CONTROL_TYPE
from backend.schema.requests import (
    ControlNetRequest,
    ControlUnit,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)


@dataclass
class Prepared:
    kwargs: dict[str, Any]
    finish: Callable[[list[Image.Image]], list[Image.Image]] = lambda images: images
    infotext: dict[str, Any] = field(default_factory=dict)  # what the request's own fields do not say
    extras: dict[str, Any] = field(default_factory=dict)  # shown to the user (e.g. the mask used)


def _common(request: GenerationRequest) -> dict[str, Any]:
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or None,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "width": request.width,
        "height": request.height,
        "num_images_per_prompt": request.batch_size,
        "eta": request.eta,  # the pipelines hand it only to a scheduler whose step takes it (DDIM)
    }


def prepare_txt2img(request: Txt2ImgRequest) -> Prepared:
    kwargs = _common(request)
    if request.latent_hires:
        kwargs["output_type"] = "latent"  # the hires pass resizes these; no decode in between
    return Prepared(kwargs)


def prepare_img2img(request: Img2ImgRequest) -> Prepared:
    image = resize(request.image, request.width, request.height, request.resize_mode)
    kwargs = {**_common(request), "image": image, "strength": request.strength}
    # The img2img pipeline takes its size from the image.
    del kwargs["width"], kwargs["height"]
    return Prepared(kwargs)


def prepare_inpaint(request: InpaintRequest, masked: float = -1.0) -> Prepared:
    """``masked``: what the inpaint ControlNet sees where it repaints (the family's ``inpaint_control_masked``)."""
    if request.margins.any():
        return prepare_outpaint(request, masked)
    size = (request.width, request.height)
    image = resize(request.image, *size, request.resize_mode)
    mask = resize(request.mask, *size, request.resize_mode).point(lambda v: 255 if v > 127 else 0)
    soft = blur_mask(mask, request.mask_blur)
    kwargs = _inpaint_kwargs(request, image, soft, mask, masked)

    def finish(images: list[Image.Image]) -> list[Image.Image]:
        return [blend_back(image, out, soft) for out in images]

    return Prepared(kwargs, finish, inpaint_control.infotext(request), extras={"mask": soft})


def prepare_outpaint(request: InpaintRequest, masked: float = -1.0) -> Prepared:
    """Inpaint on the grown canvas (its size is the validated width × height), then crop to the grown picture."""
    canvas = outpaint.extend(request.image, request.mask, request.margins, request.outpaint_fill, request.seed)
    soft = outpaint.blend_mask(canvas, request.mask_blur)
    kwargs = _inpaint_kwargs(request, canvas.image, soft, canvas.mask, masked)
    kwargs["mask_image"] = canvas.mask  # hard: the whole new area is generated

    def finish(images: list[Image.Image]) -> list[Image.Image]:
        return [blend_back(canvas.image, out, soft).crop(canvas.box) for out in images]

    return Prepared(kwargs, finish, inpaint_control.infotext(request), extras={"mask": soft.crop(canvas.box)})


def _inpaint_kwargs(
    request: InpaintRequest, image: Image.Image, soft: Image.Image, hard: Image.Image, masked: float
) -> dict[str, Any]:
    kwargs = {**_common(request), "image": image, "mask_image": soft, "strength": request.strength}
    kwargs.update(inpaint_control.control_kwargs(request, image, hard, masked))  # the ControlNet inpaint strategy's
    if request.inpaint_area == "Only masked":
        kwargs["padding_mask_crop"] = request.padding
    return kwargs


def prepare_controlnet(request: ControlNetRequest, maps: list[Image.Image]) -> Prepared:
    """``maps``: each unit's control map at the output size (the engine runs the preprocessors)."""
    units = request.units

    def per_unit(values: list[Any]) -> Any:
        # One ControlNet takes plain values; several (a MultiControlNetModel) take one value per unit.
        return values[0] if len(values) == 1 else values

    kwargs = {
        **_common(request),
        "controlnet_conditioning_scale": per_unit([u.conditioning_scale for u in units]),
        "control_guidance_start": per_unit([u.guidance_start for u in units]),
        "control_guidance_end": per_unit([u.guidance_end for u in units]),
        "guess_mode": request.guess_mode,
    }
    extra: dict[str, Any] = {}
    if request.init_image is not None:
        init = resize(request.init_image, request.width, request.height, request.resize_mode)
        kwargs.update(image=init, control_image=per_unit(maps), strength=request.strength)
    else:
        kwargs["image"] = per_unit(maps)
    for index, unit in enumerate(units):
        extra[f"ControlNet {index}"] = unit_infotext(unit, min(request.width, request.height))
    return Prepared(kwargs, infotext=extra, extras={"control_maps": maps})


def unit_infotext(unit: ControlUnit, output_side: int) -> str:
    """A1111's per-unit ControlNet entry ("Module: …, Model: …, Weight: …"), with our type names."""
    parts = {
        "Module": unit.control_type if unit.preprocessor == "auto" else "none",
        "Model": unit.control_type,
        "Weight": f"{unit.conditioning_scale:g}",
        "Guidance Start": f"{unit.guidance_start:g}",
        "Guidance End": f"{unit.guidance_end:g}",
    }
    if unit.preprocessor == "auto":
        parts["Processor Res"] = str(unit.detect_resolution or output_side)
        if unit.control_type == "canny":
            parts.update({"Threshold A": str(unit.low_threshold), "Threshold B": str(unit.high_threshold)})
        if unit.control_type == "pose":
            chosen = {"body": unit.pose_body, "hands": unit.pose_hands, "face": unit.pose_face}
            parts["Pose"] = "+".join(name for name, on in chosen.items() if on) or "nothing"
    return ", ".join(f"{key}: {value}" for key, value in parts.items())


def pipeline_key(request: GenerationRequest) -> tuple[str, tuple[str, ...]]:
    """Which pipeline runs ``request``: the task pipeline and the control types of its ControlNets."""
    if isinstance(request, ControlNetRequest):
        task = "img2img" if request.init_image is not None else "txt2img"
        return task, tuple(unit.control_type for unit in request.units)
    if inpaint_control.uses_controlnet(request):
        return request.task, (INPAINT_CONTROL_TYPE,)  # diffusers' ControlNet inpaint pipeline, with the model's UNet
    return request.task, ()


PREPARERS: dict[str, Callable[..., Prepared]] = {
    "txt2img": prepare_txt2img,
    "img2img": prepare_img2img,
    "inpaint": prepare_inpaint,
    "controlnet": prepare_controlnet,
}


def prepare(request: GenerationRequest, **context: Any) -> Prepared:
    """``context``: what the engine computed for the task beforehand (ControlNet: the control maps)."""
    return PREPARERS[request.task](request, **context)
