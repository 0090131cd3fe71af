"""The PNG info tab: drop an image, read its generation parameters, send them to a tab."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from backend.images.ops import check_picture_file
from backend.library.pnginfo import PngInfoError, parameters_dict, read_parameters

from .events import refuse
from .output import SEND_TARGETS
from .send import NothingToSend
from .studio import Studio

SEND_TO = {"txt2img": "Send to txt2img", **SEND_TARGETS}  # the galleries' names for the same buttons


def build_tab(studio: Studio) -> tuple[dict[str, gr.Button], list[gr.components.Component]]:
    """The tab, its "Send to …" buttons and the inputs those buttons read."""
    max_pixels = studio.engine.settings.max_image_pixels
    with gr.Row():
        with gr.Column(scale=1):
            # A file input, not gr.Image: Gradio would decode an image first and hide why a bad file fails.
            image = gr.File(label="Drop a PNG from SD Studio or A1111", file_types=["image"], elem_id="pnginfo-image")
            preview = gr.Image(label="Image", type="filepath", interactive=False, elem_id="pnginfo-preview")
        with gr.Column(scale=1):
            raw = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo-raw")
            parsed = gr.JSON(label="Parsed", elem_id="pnginfo-parsed")
            with gr.Row():
                buttons = {t: gr.Button(label, size="sm", elem_id=f"pnginfo-send-{t}") for t, label in SEND_TO.items()}

    def png_info(image: str | None) -> tuple[str, dict[str, Any]]:
        """The raw infotext of an image and its parsed fields."""
        if not image:
            return "", {}
        try:
            text, info = read_parameters(image, max_pixels)
        except PngInfoError as err:
            raise refuse(str(err)) from None
        return text, parameters_dict(info)

    def show(image: str | None) -> str | None:
        # Runs outside the queue: the header alone, never a decode (the png_info event says what is wrong).
        try:
            check_picture_file(image, max_pixels)
        except (ValueError, TypeError):
            return None
        return image

    image.change(png_info, inputs=image, outputs=[raw, parsed], api_name="png_info")
    image.change(show, inputs=image, outputs=preview, queue=False, api_visibility="private")
    return buttons, [image, raw]


def load_from_pnginfo(path: str | None, raw: str, max_pixels: int) -> tuple[Image.Image | None, str]:
    if not path:
        raise NothingToSend("There is no picture to send: drop a PNG into PNG info first.")
    try:
        check_picture_file(path, max_pixels)
    except ValueError as err:
        raise NothingToSend(f"Image: {err}") from None
    with Image.open(path) as img:
        img.load()
        return img.copy(), raw
