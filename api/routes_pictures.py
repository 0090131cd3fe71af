"""Picture routes that generate nothing: ``extra-single-image`` (A1111's Extras: upscale one picture) and
``png-info`` (the parameters a picture carries, under A1111's infotext keys)."""

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
from .models import ExtrasBody, ExtrasResponse, PngInfoBody, PngInfoResponse
from .state import ERRORS, SD, ApiState, refusal


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
            field = {"upscaler": "upscaler_1", "scale": "upscaling_resize"}.get(err.field, err.field)
            return refusal(field, str(err))
        return ExtrasResponse(html_info="", image=encode_png(out))


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
