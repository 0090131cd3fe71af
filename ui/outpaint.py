"""The inpaint tab's "Outpainting" accordion: grow the picture by N px per side, and how to fill the new area."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend.outpaint import FILLS
from backend.requests import field_limits

from .common import Studio, limit_slider


@dataclass
class OutpaintControls:
    left: gr.Slider
    right: gr.Slider
    up: gr.Slider
    down: gr.Slider
    fill: gr.Radio

    def inputs(self) -> list[gr.components.Component]:
        """In the order of the inpaint handler's ``outpaint_*`` parameters."""
        return [self.left, self.right, self.up, self.down, self.fill]


def build_outpaint(studio: Studio, prefix: str = "inpaint") -> OutpaintControls:
    limit = field_limits(studio.engine.settings)["outpaint"]
    with gr.Accordion("Outpainting", open=False, elem_id=f"{prefix}-outpaint"):
        gr.Markdown(
            "Grow the picture by these many pixels on each side; the new area is generated (no need to paint it) "
            "and the old pixels are kept exactly. The result has the grown size (Width/Height are not used). "
            "Use a high Denoising strength (0.9–1)."
        )
        with gr.Row():
            sides = [
                limit_slider(label, limit, 0, f"{prefix}-outpaint-{label.lower()}")
                for label in ("Left", "Right", "Up", "Down")
            ]
        fill = gr.Radio(
            list(FILLS),
            value=FILLS[0],
            label="Fill the new area with",
            info="Blurred edge: the border's colours stretched and blurred; Noise: random pixels (from the seed)",
            elem_id=f"{prefix}-outpaint-fill",
        )
    return OutpaintControls(*sides, fill)
