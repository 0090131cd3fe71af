"""The txt2img tab's "Hires. fix" accordion (A1111's field names), one builder the tab calls."""

from __future__ import annotations

import gradio as gr

from backend.models.upscaler_files import hires_upscaler_names
from backend.schema.fields import field_default
from backend.schema.requests import Txt2ImgRequest, field_limits

from .controls import field_slider, words
from .inputs import FieldDropdown, FieldSlider
from .studio import Studio


def build_hires(studio: Studio) -> dict[str, gr.components.Component]:
    """The hires controls by field name, in the order of the txt2img handler's (and API's) hires parameters."""
    limits = field_limits(studio.engine.settings)

    def default(name: str):
        return field_default(Txt2ImgRequest, name)

    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img-hires"):
        enable = gr.Checkbox(
            default("enable_hr"),
            elem_id="txt2img-enable-hr",
            **words(
                "enable_hr", Txt2ImgRequest, info="Generate at the size above, upscale, then refine at the larger size"
            ),
        )
        with gr.Row():
            upscaler = FieldDropdown(
                hires_upscaler_names(studio.engine.settings),
                value=default("hr_upscaler"),
                allow_custom_value=True,  # the engine names the upscalers it has
                elem_id="txt2img-hr-upscaler",
                **words("hr_upscaler", Txt2ImgRequest),
            )
            # The slider offers up to 4×; the validator takes up to 8× (an API client's choice), within the size limit.
            scale = FieldSlider(
                1.0,
                4.0,
                value=default("hr_scale"),
                step=0.05,
                elem_id="txt2img-hr-scale",
                **words("hr_scale", Txt2ImgRequest),
            )
        with gr.Row():
            # 0 is A1111's "as many as the first pass", below the steps limit's minimum
            steps = field_slider(
                "hr_steps", limits, "txt2img-hr-steps", cls=Txt2ImgRequest, info="0 = the same as Sampling steps"
            )
            strength = field_slider("strength", limits, "txt2img-hr-strength", cls=Txt2ImgRequest)
    return {"enable_hr": enable, "hr_upscaler": upscaler, "hr_scale": scale, "hr_steps": steps, "strength": strength}
