"""The img2img tab: start from a picture, keep as much of it as ``strength`` says."""

from __future__ import annotations

import gradio as gr

from backend.images import RESIZE_MODES
from backend.requests import Img2ImgRequest, field_limits

from .common import (
    Studio,
    TabHandle,
    build_common_controls,
    build_output_block,
    build_prompt_section,
    build_request,
    limit_slider,
    stream_generation,
    wire_generation,
)
from .inputs import FieldRadio, PictureInput, picture_input


def build_strength(studio: Studio, prefix: str) -> gr.Slider:
    limit = field_limits(studio.engine.settings)["strength"]
    return limit_slider(
        "Denoising strength",
        limit,
        0.75,
        f"{prefix}-strength",
        info="How much to change the input: 0 keeps it, 1 ignores it.",
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
            strength = build_strength(studio, "img2img")
            resize_mode = FieldRadio(
                list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode", elem_id="img2img-resize-mode"
            )
            controls = build_common_controls(studio, "img2img", size_from_image=True, prompt_section=section)
        with gr.Column(scale=1):
            out = build_output_block("img2img")

    def img2img(
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        guidance_scale: float,
        width: int,
        height: int,
        batch_size: int,
        sampler: str,
        schedule: str,
        model: str,
        styles: list[str] | None,
        vae: str,
        skip_cfg_after: float,
        deep_cache: int,
        image,
        strength: float,
        resize_mode: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ):
        """Generate from an image and a prompt; width/height 0 follow the image."""
        req = build_request(Img2ImgRequest, locals())
        yield from stream_generation(studio, req, request, progress, tab="img2img")

    wire_generation(
        studio,
        controls,
        out,
        img2img,
        [image, strength, resize_mode],
        api_name="img2img",
        preset_fields={"strength": strength},
    )
    return TabHandle("img2img", controls, out, image, {"strength": strength})
