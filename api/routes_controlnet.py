"""The ControlNet extension's own routes under ``/controlnet``: its version, models (the models' ControlNet types
and the IP-Adapter files), preprocessor modules (the control maps', ``inpaint_only`` and the ``ip-adapter_*`` ones),
and ``detect`` (control maps from pictures, without generating)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.generation.ip_adapter import adapter_names
from backend.images.annotators import PreprocessError
from backend.schema.errors import ValidationError
from backend.schema.geometry import size_from_image
from backend.schema.inpaint_control import INPAINT_MODULE
from backend.schema.requests import ControlNetRequest, ControlUnit

from .codec import decode_image, encode_png
from .controlnet_units import IP_MODULES, MODULES, control_field
from .models import DetectBody
from .state import ERRORS, ApiState, refusal


def _control_map(state: ApiState, body: DetectBody, picture: str, module: str) -> list:
    """One picture's control map(s), made as a one-step ControlNet request's unit would be."""
    control_type, (pose_body, hands, face) = MODULES[module]
    limits, settings = state.limits(), state.engine.settings
    image = decode_image(picture, "controlnet_input_images", limits.max_bytes, limits.max_pixels)
    width, height = size_from_image(image, settings.max_width, settings.max_height)
    resolution = body.controlnet_processor_res
    low, high = int(body.controlnet_threshold_a), int(body.controlnet_threshold_b)
    unit = ControlUnit(
        image=image.convert("RGB"),
        control_type=control_type,
        low_threshold=low if low > 0 else 100,
        high_threshold=high if high > 0 else 200,
        detect_resolution=resolution if resolution > 0 else 0,
        pose_body=pose_body,
        pose_hands=hands,
        pose_face=face,
    )
    request = ControlNetRequest(units=(unit,), width=width, height=height, steps=1)
    return state.engine.control_maps(request)


def _detect(state: ApiState, body: DetectBody) -> dict | JSONResponse:
    module = body.controlnet_module.lower()
    if module not in MODULES:
        return refusal("controlnet_module", f"unknown module {module!r}; choose one of: {', '.join(MODULES)}")
    pictures = body.controlnet_input_images or body.controlnet_images
    if not pictures:
        return refusal("controlnet_input_images", "send at least one base64 picture")
    maps = []
    for picture in pictures:
        try:
            maps += _control_map(state, body, picture, module)
        except ValidationError as err:
            field = control_field(err.field).replace("alwayson_scripts.controlnet.args[0].", "controlnet_")
            return refusal(field, str(err))
        except PreprocessError as err:
            return refusal("controlnet_module", str(err))
    return {"images": [encode_png(m) for m in maps], "info": "Success"}


def add_controlnet(router: APIRouter, state: ApiState) -> None:
    @router.get("/controlnet/version", tags=["controlnet"])
    def controlnet_version():
        return {"version": 2}

    @router.get("/controlnet/model_list", tags=["controlnet"])
    def controlnet_model_list():
        registry = state.engine.registry
        types = sorted({t for name in registry.names for t, _ in registry.get(name).controlnets})
        return {"model_list": [*types, *adapter_names()]}

    @router.get("/controlnet/module_list", tags=["controlnet"])
    def controlnet_module_list(alias_names: bool = False):
        return {"module_list": ["none", *MODULES, INPAINT_MODULE, *IP_MODULES]}

    @router.post("/controlnet/detect", responses=ERRORS, tags=["controlnet"])
    def controlnet_detect(body: DetectBody):
        return _detect(state, body)
