"""The Extras tab: upscale a picture on its own (Lanczos or a model from the upscaler folders); ``/upscale``."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from backend.models.upscaler_files import LANCZOS, upscaler_names
from backend.schema.errors import ValidationError

from .events import refuse
from .inputs import FieldDropdown, FieldSlider, PictureInput, picture_input
from .studio import Studio


def build_tab(studio: Studio) -> None:
    settings = studio.engine.settings
    with gr.Row():
        with gr.Column(scale=1):
            image = picture_input(
                PictureInput,
                max_pixels=settings.max_image_pixels,
                label="Image",
                type="pil",
                image_mode="RGB",
                format="png",
                elem_id="extras-image",
            )
            # Custom values reach the backend, which names the upscalers it has (a file added after the start too).
            upscaler = FieldDropdown(
                upscaler_names(settings),
                value=LANCZOS,
                label="Upscaler",
                allow_custom_value=True,
                elem_id="extras-upscaler",
            )
            scale = FieldSlider(1.0, 8.0, value=2.0, step=0.05, label="Scale", elem_id="extras-scale")
            run = gr.Button("Upscale", variant="primary", elem_id="extras-run")
        with gr.Column(scale=1):
            result = gr.Image(label="Result", type="pil", format="png", interactive=False, elem_id="extras-result")

    def upscale(image: Image.Image | None, upscaler: str = LANCZOS, scale: float = 2.0) -> Image.Image:
        """Upscale one picture by ``scale`` with ``upscaler``. Returns the PNG."""
        try:
            return studio.engine.upscale(image, upscaler, scale)
        except ValidationError as err:
            raise refuse(f"{err.field}: {err}") from None

    run.click(upscale, inputs=[image, upscaler, scale], outputs=result, api_name="upscale", concurrency_id="gpu")
