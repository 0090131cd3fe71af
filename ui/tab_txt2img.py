"""The text2img tab."""

from __future__ import annotations

import gradio as gr

from backend.requests import Txt2ImgRequest

from .common import (
    Studio,
    TabHandle,
    build_common_controls,
    build_output_block,
    build_request,
    stream_generation,
    wire_generation,
)
from .hires import build_hires


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            controls = build_common_controls(studio, "txt2img")
            hires = build_hires(studio)
        with gr.Column(scale=1):
            out = build_output_block("txt2img")

    def txt2img(
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
        enable_hr: bool = False,
        hr_upscaler: str = "Lanczos",
        hr_scale: float = 2.0,
        hr_steps: int = 0,
        strength: float = 0.7,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ):
        """Generate images from a prompt. Returns the images (PNG) and the A1111-style infotext."""
        req = build_request(Txt2ImgRequest, locals())
        yield from stream_generation(studio, req, request, progress, tab="txt2img")

    wire_generation(studio, controls, out, txt2img, hires.inputs(), api_name="txt2img", preset_fields=hires.fields())
    return TabHandle("txt2img", controls, out, fields=hires.fields())
