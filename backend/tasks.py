"""Per-task preparation: a validated request → pipeline arguments, a post-process, infotext extras.

One small function per task; the engine runs them all the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .images import blend_back, blur_mask, resize
from .requests import GenerationRequest, Img2ImgRequest, InpaintRequest, Txt2ImgRequest


@dataclass
class Prepared:
    kwargs: dict[str, Any]
    finish: Callable[[list[Image.Image]], list[Image.Image]] = lambda images: images
    infotext: dict[str, Any] = field(default_factory=dict)
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
    }


def prepare_txt2img(request: Txt2ImgRequest) -> Prepared:
    return Prepared(_common(request))


def prepare_img2img(request: Img2ImgRequest) -> Prepared:
    image = resize(request.image, request.width, request.height, request.resize_mode)
    kwargs = {**_common(request), "image": image, "strength": request.strength}
    # The img2img pipeline takes its size from the image.
    del kwargs["width"], kwargs["height"]
    return Prepared(kwargs, infotext={"Denoising strength": request.strength})


def prepare_inpaint(request: InpaintRequest) -> Prepared:
    size = (request.width, request.height)
    image = resize(request.image, *size, request.resize_mode)
    mask = resize(request.mask, *size, request.resize_mode).point(lambda v: 255 if v > 127 else 0)
    soft = blur_mask(mask, request.mask_blur)
    kwargs = {**_common(request), "image": image, "mask_image": soft, "strength": request.strength}
    extra: dict[str, Any] = {"Denoising strength": request.strength, "Mask blur": request.mask_blur}
    if request.inpaint_area == "Only masked":
        kwargs["padding_mask_crop"] = request.padding
        extra.update({"Inpaint area": "Only masked", "Masked area padding": request.padding})

    def finish(images: list[Image.Image]) -> list[Image.Image]:
        return [blend_back(image, out, soft) for out in images]

    return Prepared(kwargs, finish, extra, {"mask": soft})


PREPARERS: dict[str, Callable[[Any], Prepared]] = {
    "txt2img": prepare_txt2img,
    "img2img": prepare_img2img,
    "inpaint": prepare_inpaint,
}


def prepare(request: GenerationRequest) -> Prepared:
    return PREPARERS[request.task](request)
