"""The inpaint tab's "Outpainting" accordion: grow the picture by N px per side, and how to fill the new area."""

from __future__ import annotations

import gradio as gr

from backend.images.outpaint import FILLS
from backend.schema.fields import field_default
from backend.schema.requests import InpaintRequest, field_limits

from .controls import field_slider
from .studio import Studio

SIDES = ("left", "right", "up", "down")


def build_outpaint(studio: Studio, prefix: str = "inpaint") -> dict[str, gr.components.Component]:
    """The controls by field name, in the order of the inpaint handler's ``outpaint_*`` parameters."""
    limits = field_limits(studio.engine.settings)
    with gr.Accordion("Outpainting", open=False, elem_id=f"{prefix}-outpaint"):
        gr.Markdown(
            "Grow the picture by these many pixels on each side; the new area is generated (no need to paint it) "
            "and the old pixels are kept exactly. The result has the grown size (Width/Height are not used). "
            "Use a high Denoising strength (0.9–1)."
        )
        with gr.Row():
            # The schema has no words for the sides: a row of Left/Right/Up/Down says it best.
            found = {
                f"outpaint_{side}": field_slider(
                    f"outpaint_{side}", limits, f"{prefix}-outpaint-{side}", cls=InpaintRequest, label=side.capitalize()
                )
                for side in SIDES
            }
        found["outpaint_fill"] = gr.Radio(
            list(FILLS),
            value=field_default(InpaintRequest, "outpaint_fill"),
            label="Fill the new area with",
            info="Blurred edge: the border's colours stretched and blurred; Noise: random pixels (from the seed)",
            elem_id=f"{prefix}-outpaint-fill",
        )
    return found
