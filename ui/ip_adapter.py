"""The "IP-Adapter" accordion of the txt2img, img2img and ControlNet tabs: the fields of ``backend.schema.ip_adapter``.

The adapter menu lists the files of ``models/ipadapter`` (``SDSTUDIO_IPADAPTER_DIR``), "None" first, which is off; its
Refresh button scans the folder again. The weight is a slider over the schema's limit; the reference pictures are a
gallery taking one or more uploads, checked like every picture input before they are decoded. Labels and tooltips
are the schema's. The tabs take the three as optional handler parameters (an API client may leave them out).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from backend.generation.ip_adapter import adapter_names
from backend.images.ops import check_picture_file
from backend.schema.fields import Limit
from backend.schema.ip_adapter import IP_ADAPTER_FIELDS, OFF

from .controls import field_control, words
from .events import QUIET, refuse
from .inputs import LIMIT_CLASS, FieldDropdown
from .studio import Studio

FIELDS = tuple(IP_ADAPTER_FIELDS)  # the handler parameters, in this order


def adapter_choices() -> list[str]:
    return [OFF, *adapter_names()]


class ReferencePictures(gr.Gallery):
    """An upload gallery whose value is a tuple of RGB pictures (the request's ``ip_adapter_image``); each file is
    checked against the server's pixel limit (its ``LIMIT_CLASS`` CSS class) before it is decoded."""

    is_template = True

    def preprocess(self, payload: Any) -> tuple[Image.Image, ...]:
        limit = next((int(c[len(LIMIT_CLASS) :]) for c in self.elem_classes or [] if c.startswith(LIMIT_CLASS)), 0)
        pictures = []
        for path, _caption in super().preprocess(payload) or []:
            try:
                check_picture_file(path, limit)
                with Image.open(path) as image:
                    pictures.append(image.convert("RGB"))
            except (ValueError, OSError, SyntaxError) as err:
                raise refuse(f"{self.label}: {err}") from None
        return tuple(pictures)


def build_ip_adapter(studio: Studio, prefix: str, limits: dict[str, Limit]) -> dict[str, gr.components.Component]:
    """The IP-Adapter controls by field name (``FIELDS`` order), folded in an accordion."""

    def elem_id(name: str) -> str:
        return f"{prefix}-{name.replace('_', '-')}"

    found: dict[str, gr.components.Component] = {}
    with gr.Accordion("IP-Adapter", open=False, elem_id=f"{prefix}-ip-adapter-box"):
        with gr.Row(equal_height=True):
            # Custom values reach the engine, which names the adapters it has and the folder they belong in.
            found["ip_adapter"] = FieldDropdown(
                adapter_choices(), value=OFF, scale=8, allow_custom_value=True, elem_id=elem_id("ip_adapter"),
                **words("ip_adapter"),
            )
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80, elem_classes=["tool-button"],
                                elem_id=f"{prefix}-ip-adapter-refresh")
        found["ip_adapter_weight"] = field_control("ip_adapter_weight", limits, elem_id("ip_adapter_weight"))
        # A gallery has no tooltip: the schema's label only.
        found["ip_adapter_image"] = ReferencePictures(
            value=None, type="filepath", file_types=["image"], interactive=True, columns=4, height=200,
            label=words("ip_adapter_image")["label"], elem_id=elem_id("ip_adapter_image"),
            elem_classes=[f"{LIMIT_CLASS}{studio.engine.settings.max_image_pixels}"],
        )

    def refreshed(current: str) -> gr.Dropdown:
        choices = adapter_choices()
        return gr.Dropdown(choices=choices, value=current if current in choices else OFF)

    refresh.click(refreshed, inputs=found["ip_adapter"], outputs=found["ip_adapter"], **QUIET)
    return {name: found[name] for name in FIELDS}
