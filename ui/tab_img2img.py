"""The img2img tab: start from a picture, keep as much of it as ``strength`` says."""

from __future__ import annotations

import gradio as gr

from backend.schema.choices import RESIZE_MODES
from backend.schema.fields import field_default
from backend.schema.requests import Img2ImgRequest, field_limits

from .common import build_common_controls
from .controls import field_slider, words
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, tab_handler
from .inputs import FieldRadio, PictureInput, picture_input
from .ip_adapter import build_ip_adapter
from .output import build_output_block
from .prompt import build_prompt_section
from .send import sent_fields
from .studio import Studio
from .wiring import wire_generation


def build_strength(studio: Studio, prefix: str, cls: type = Img2ImgRequest) -> gr.Slider:
    return field_slider(
        "strength",
        field_limits(studio.engine.settings),
        f"{prefix}-strength",
        cls=cls,
        info="How much to change the input: 0 keeps it, 1 ignores it.",
    )


def build_resize_mode(prefix: str, cls: type = Img2ImgRequest) -> gr.Radio:
    return FieldRadio(
        list(RESIZE_MODES),
        value=field_default(cls, "resize_mode"),
        elem_id=f"{prefix}-resize-mode",
        **words("resize_mode", cls),
    )


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            section = build_prompt_section(studio, "img2img")
            image = picture_input(
                PictureInput,
                label="Image",
                max_pixels=studio.engine.settings.max_image_pixels,
                type="pil",
                image_mode="RGB",
                format="png",
                elem_id="img2img-image",
            )
            own = {
                "image": image,
                "strength": build_strength(studio, "img2img"),
                "resize_mode": build_resize_mode("img2img"),
            }
            controls = build_common_controls(studio, "img2img", size_from_image=True, prompt_section=section)
            ip = build_ip_adapter(studio, "img2img", field_limits(studio.engine.settings))
        with gr.Column(scale=1):
            out = build_output_block("img2img")

    def img2img(values, request, progress):
        """Generate from an image and a prompt; width/height 0 follow the image."""
        req = build_request(Img2ImgRequest, values)
        yield from stream_generation(studio, req, request, progress, tab="img2img")

    handler = tab_handler(img2img, Img2ImgRequest, controls.fields, required=tuple(own), optional=tuple(ip))
    own |= ip
    wire_generation(studio, controls, out, handler, own, api_name="img2img")
    return TabHandle("img2img", controls, out, image, sent_fields(Img2ImgRequest, own))
