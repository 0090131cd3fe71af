"""Picture routes that generate nothing: ``extra-single-image`` and ``extra-batch-images`` (A1111's Extras: upscale
pictures), ``png-info`` (the parameters a picture carries, under A1111's infotext keys), and ``interrogate``, which
SD Studio cannot do (no captioning model) and refuses saying so."""

from __future__ import annotations

import io
import tempfile
from typing import Any

from fastapi import APIRouter

from backend.library.outputs import png_info as make_info
from backend.library.pnginfo import PngInfoError, parameters_dict, read_parameters
from backend.schema.errors import ValidationError

from . import convert
from .codec import decode_image, encode_png
from .models import (
    ExtrasBatchBody,
    ExtrasBatchResponse,
    ExtrasBody,
    ExtrasResponse,
    InterrogateBody,
    PngInfoBody,
    PngInfoResponse,
)
from .state import ERRORS, SD, ApiState, refusal

# Extras fields as SD Studio's upscale calls them → A1111's names.
EXTRAS_FIELDS = {"upscaler": "upscaler_1", "scale": "upscaling_resize"}
INTERROGATE_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 404: ERRORS[422]}


def add_extras(router: APIRouter, state: ApiState) -> None:
    @router.post(f"{SD}/extra-single-image", response_model=ExtrasResponse, responses=ERRORS, tags=["sdapi"])
    def extra_single_image(body: ExtrasBody):
        """Upscale one picture (A1111's Extras); the same upscalers as the Extras tab."""
        limits = state.limits()
        try:
            name, scale = convert.extras_upscaler(body)
            image = decode_image(body.image, "image", limits.max_bytes, limits.max_pixels)
            out = state.engine.upscale(image, name, scale)
        except ValidationError as err:
            return refusal(EXTRAS_FIELDS.get(err.field, err.field), str(err))
        return ExtrasResponse(html_info="", image=encode_png(out))

    @router.post(f"{SD}/extra-batch-images", response_model=ExtrasBatchResponse, responses=ERRORS, tags=["sdapi"])
    def extra_batch_images(body: ExtrasBatchBody):
        """Upscale each picture of ``imageList`` as ``extra-single-image`` does, in order; one bad picture refuses
        the whole batch, naming it (``imageList[2].data``)."""
        limits = state.limits()
        try:
            name, scale = convert.extras_upscaler(body)
            if not body.imageList:
                raise ValidationError("imageList", 'send at least one picture: [{"data": base64, "name": …}]')
            images = [
                decode_image(item.data, f"imageList[{i}].data", limits.max_bytes, limits.max_pixels)
                for i, item in enumerate(body.imageList)
            ]
            outs = [state.engine.upscale(image, name, scale) for image in images]
        except ValidationError as err:
            return refusal(EXTRAS_FIELDS.get(err.field, err.field), str(err))
        return ExtrasBatchResponse(html_info="", images=[encode_png(out) for out in outs])

    @router.post(f"{SD}/interrogate", responses=INTERROGATE_ERRORS, tags=["sdapi"])
    def interrogate(body: InterrogateBody):
        """A1111 captions a picture with CLIP or DeepBooru; SD Studio has no captioning model: a 404 that says so,
        as A1111 answers for a model it does not have."""
        if not body.image:
            return refusal("image", "send the picture to describe (base64)")
        message = (
            f"no captioning model {body.model!r}: SD Studio has no interrogate (CLIP/DeepBooru) model to configure; "
            "write the prompt yourself, or read a generated picture's own prompt with POST /sdapi/v1/png-info"
        )
        return refusal("model", message, status=404, error="NotFound")


def add_png_info(router: APIRouter, state: ApiState) -> None:
    @router.post(f"{SD}/png-info", response_model=PngInfoResponse, responses=ERRORS, tags=["sdapi"])
    def png_info(body: PngInfoBody):
        try:
            image = decode_image(body.image, "image", state.limits().max_bytes, state.limits().max_pixels)
        except ValidationError as err:
            return refusal(err.field, str(err))
        with tempfile.SpooledTemporaryFile() as handle:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=_keep_text(image))
            handle.write(buffer.getvalue())
            handle.seek(0)
            try:
                text, parsed = read_parameters(handle, state.engine.settings.max_image_pixels)
            except PngInfoError:
                return PngInfoResponse(info="", items={}, parameters={})  # A1111: empty info, not an error
        items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
        return PngInfoResponse(info=text, items=items, parameters=_a1111_parameters(parsed))


def _keep_text(image) -> Any:
    text = image.info.get("parameters")
    return make_info(text) if isinstance(text, str) else None


def _a1111_parameters(parsed) -> dict[str, Any]:
    """The parsed fields under A1111's infotext keys (``Prompt``, ``Steps``, ``CFG scale``…)."""
    fields = parameters_dict(parsed)
    result = dict(parsed.params)
    result.setdefault("Prompt", fields.get("prompt") or "")
    result.setdefault("Negative prompt", fields.get("negative_prompt") or "")
    return result
