"""The detail pass (A1111's ADetailer extension): find things in the finished pictures, repaint each one larger.

After the main pass (and the hires fix), a detector (``backend.models.detectors``) finds boxes in each picture. Each
box becomes a mask (blurred by ``ad_mask_blur``); the box plus ``ad_inpaint_only_masked_padding`` pixels of context
is cut out, scaled to the request's size, inpainted at ``ad_denoising_strength`` with the detail prompts (empty = the
main ones; ``[PROMPT]`` in them stands for the main prompt, as in the extension) and pasted back through the mask, so
no pixel outside it changes. The inpaint pipeline is the loaded model's own, derived as the inpaint tab derives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

from backend.families import Family
from backend.generation.networks import parse_lora_tags
from backend.generation.pipeline_call import call_pipeline
from backend.images.ops import blend_back, blur_mask
from backend.models.detectors import OFF, Box, Detector, Detectors
from backend.models.pipelines import LoadedModel
from backend.schema.errors import ValidationError
from backend.schema.requests import GenerationRequest
from backend.schema.seeds import batch_seeds

# The extension release whose arguments and infotext keys this pass follows (its "ADetailer version" key).
ADETAILER_VERSION = "24.11.1"
PROMPT_TOKEN = "[PROMPT]"


def wanted(request: GenerationRequest) -> bool:
    return getattr(request, "ad_model", "None") not in OFF


def check(request: GenerationRequest, model_family: Family, detectors: Detectors) -> None:
    """Refuse, before anything runs, a detail pass the model cannot inpaint for or whose detector is missing."""
    if not wanted(request):
        return
    if "inpaint" not in model_family.tasks:
        raise ValidationError("ad_model", f"{model_family.label} models cannot inpaint, so no detail pass: choose None")
    detectors.path(request.ad_model)


def infotext(request: GenerationRequest) -> dict[str, Any]:
    """What the request's fields do not say: the extension's version key, written with a detail pass."""
    return {"ADetailer version": ADETAILER_VERSION} if wanted(request) else {}


def detail_prompts(request: GenerationRequest, prompt: Any, negative: Any) -> tuple[str, str | None]:
    """The prompts each box is repainted with: the detail ones (``[PROMPT]`` = the main one), else the main ones
    (``prompt``/``negative``: the main pass's, LoRA tags already out). LoRA tags in a detail prompt are dropped: the
    LoRAs the main prompt applied stay applied to the shared model."""
    # None: the run encoded its prompts itself (the grid); its texts without LoRA tags are what it encoded.
    main = parse_lora_tags(request.prompt)[0] if prompt is None else str(prompt)
    main_negative = parse_lora_tags(request.negative_prompt)[0] if negative is None else str(negative)
    own = parse_lora_tags(request.ad_prompt)[0].replace(PROMPT_TOKEN, main).strip()
    own_negative = parse_lora_tags(request.ad_negative_prompt)[0].replace(PROMPT_TOKEN, main_negative).strip()
    return own or main, (own_negative or main_negative) or None


def box_mask(size: tuple[int, int], box: Box, blur: int) -> Image.Image:
    """The box, white on black, blurred: where the repainted crop is pasted back."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return blur_mask(mask, blur)


def detail_pass(
    request: GenerationRequest,
    images: list[Image.Image],
    pipe: Any,
    loaded: LoadedModel,
    detector: Detector,
    prompts: tuple[Any, Any],
    callback: Callable[..., Any],
) -> list[Image.Image]:
    """Each picture with every box ``detector`` finds repainted; picture i keeps seed ``request.seed + i``.

    ``pipe``: the model's inpaint pipeline. ``prompts``: the main pass's (prompt, negative prompt) as encoded.
    """
    prompt, negative = detail_prompts(request, *prompts)
    out: list[Image.Image] = []
    for seed, image in zip(batch_seeds(request.seed, len(images)), images, strict=True):
        picture = image.convert("RGB")
        one = request.replace(seed=seed, batch_size=1)
        for box in detector.detect(picture, request.ad_confidence):
            picture = repaint_box(one, picture, box, pipe, loaded, (prompt, negative), callback)
        out.append(picture)
    return out


def repaint_box(
    request: GenerationRequest,
    picture: Image.Image,
    box: Box,
    pipe: Any,
    loaded: LoadedModel,
    prompts: tuple[str, str | None],
    callback: Callable[..., Any],
) -> Image.Image:
    """One box inpainted "only masked": diffusers crops the box plus the padding, works at the request's size and
    pastes back; the blend with the blurred box keeps every other pixel exactly."""
    soft = box_mask(picture.size, box, request.ad_mask_blur)
    kwargs = {
        "prompt": prompts[0],
        "negative_prompt": prompts[1],
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "width": request.width,
        "height": request.height,
        "num_images_per_prompt": 1,
        "eta": request.eta,
        "image": picture,
        "mask_image": soft,
        "strength": request.ad_denoising_strength,
        "padding_mask_crop": request.ad_inpaint_only_masked_padding,
    }
    repainted = call_pipeline(pipe, loaded, request, kwargs, callback)[0]
    return blend_back(picture, repainted, soft)
