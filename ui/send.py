""" "Send to img2img / inpaint": carry the selected gallery image and its parameters to another tab."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from backend.infotext import parse_infotext
from backend.outputs import read_infotext

from .common import TabHandle

# Request fields carried over (size is not: the receiving tab follows the image's size).
CARRIED = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "sampler", "schedule", "model")


def selected_image(gallery: Any, index: int | None) -> Image.Image:
    if not gallery:
        raise gr.Error("Generate an image first, then send it")
    item = gallery[min(index or 0, len(gallery) - 1)]
    source = item[0] if isinstance(item, (list, tuple)) else item
    if isinstance(source, dict):  # Gallery payloads may arrive as {"image": {"path": ...}} too
        source = source.get("image", source)
        source = source.get("path", source) if isinstance(source, dict) else source
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image.load()
    return image


def wire_send_buttons(handles: dict[str, TabHandle], tabs: gr.Tabs) -> None:
    for source in handles.values():
        for target_id, button in source.out.send_buttons.items():
            target = handles[target_id]
            target_fields = [getattr(target.controls, name) for name in CARRIED]

            def send(gallery, index, infotext, _target=target_id):
                image = selected_image(gallery, index)
                info = parse_infotext(read_infotext(image) or infotext or "")
                fields = info.request_fields()
                values = [fields.get(name, gr.skip()) for name in CARRIED]
                return [image.convert("RGB"), *values, gr.Tabs(selected=_target)]

            button.click(
                send,
                inputs=[source.out.gallery, source.out.selected, source.out.infotext],
                outputs=[target.image_input, *target_fields, tabs],
                queue=False,
                api_visibility="private",
            )
