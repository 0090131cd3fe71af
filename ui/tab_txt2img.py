"""The text2img tab."""

from __future__ import annotations

import gradio as gr

from backend.schema.requests import Txt2ImgRequest, field_limits

from .common import build_common_controls
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, tab_handler
from .hires import build_hires
from .ip_adapter import build_ip_adapter
from .output import build_output_block
from .send import sent_fields
from .studio import Studio
from .wiring import wire_generation


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            controls = build_common_controls(studio, "txt2img")
            hires = build_hires(studio)
            ip = build_ip_adapter(studio, "txt2img", field_limits(studio.engine.settings))
        with gr.Column(scale=1):
            out = build_output_block("txt2img")

    def txt2img(values, request, progress):
        """Generate images from a prompt. Returns the images (PNG) and the A1111-style infotext."""
        req = build_request(Txt2ImgRequest, values)
        yield from stream_generation(studio, req, request, progress, tab="txt2img")

    # The common fields, then the hires and IP-Adapter fields (optional for API clients: both are off by default).
    own = hires | ip
    handler = tab_handler(txt2img, Txt2ImgRequest, controls.fields, optional=tuple(own))
    wire_generation(studio, controls, out, handler, own, api_name="txt2img")
    return TabHandle("txt2img", controls, out, fields=sent_fields(Txt2ImgRequest, own))
