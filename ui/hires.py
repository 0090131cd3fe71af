"""The txt2img tab's "Hires. fix" accordion (A1111's field names), one builder the tab calls."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend.requests import field_limits
from backend.upscalers import hires_upscaler_names

from .common import Studio, limit_slider
from .inputs import FieldDropdown, FieldSlider


@dataclass
class HiresControls:
    enable_hr: gr.Checkbox
    hr_upscaler: gr.Dropdown
    hr_scale: gr.Slider
    hr_steps: gr.Slider
    strength: gr.Slider

    def inputs(self) -> list[gr.components.Component]:
        """In the order of the txt2img handler's hires parameters."""
        return [self.enable_hr, self.hr_upscaler, self.hr_scale, self.hr_steps, self.strength]

    def fields(self) -> dict[str, gr.components.Component]:
        return {
            "enable_hr": self.enable_hr,
            "hr_upscaler": self.hr_upscaler,
            "hr_scale": self.hr_scale,
            "hr_steps": self.hr_steps,
            "strength": self.strength,
        }


def build_hires(studio: Studio) -> HiresControls:
    limits = field_limits(studio.engine.settings)
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img-hires"):
        enable = gr.Checkbox(
            False,
            label="Hires. fix",
            elem_id="txt2img-enable-hr",
            info="Generate at the size above, upscale, then refine at the larger size",
        )
        with gr.Row():
            upscaler = FieldDropdown(
                hires_upscaler_names(studio.engine.settings),
                value="Lanczos",
                label="Hires upscaler",
                allow_custom_value=True,  # the engine names the upscalers it has
                elem_id="txt2img-hr-upscaler",
            )
            scale = FieldSlider(1.0, 4.0, value=2.0, step=0.05, label="Hires upscale", elem_id="txt2img-hr-scale")
        with gr.Row():
            # 0 is A1111's "as many as the first pass", below the steps limit's minimum
            steps = FieldSlider(
                0,
                limits["steps"].maximum,
                value=0,
                step=1,
                label="Hires steps",
                elem_id="txt2img-hr-steps",
                info="0 = the same as Sampling steps",
            )
            strength = limit_slider("Denoising strength", limits["strength"], 0.7, "txt2img-hr-strength")
    return HiresControls(enable, upscaler, scale, steps, strength)
