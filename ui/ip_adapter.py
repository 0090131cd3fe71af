"""The "IP-Adapter" accordion of the txt2img, img2img and ControlNet tabs: the fields of ``backend.schema.ip_adapter``.

The adapter menu lists the files of ``models/ipadapter`` (``SDSTUDIO_IPADAPTER_DIR``), "None" first, which is off; its
Refresh button scans the folder again. The weight is a slider over the schema's limit; the reference pictures are a
gallery taking one or more uploads, checked like every picture input before they are decoded. Labels and tooltips
are the schema's. The tabs take the three as optional handler parameters (an API client may leave them out).
"""

from __future__ import annotations

import gradio as gr

from backend.generation.ip_adapter import adapter_names
from backend.schema.fields import Limit
from backend.schema.ip_adapter import IP_ADAPTER_FIELDS, OFF

from .controls import field_control, refreshable_menu, words
from .inputs import ReferencePictures, picture_input
from .studio import Studio

FIELDS = tuple(IP_ADAPTER_FIELDS)  # the handler parameters, in this order


def adapter_choices() -> list[str]:
    return [OFF, *adapter_names()]


def build_ip_adapter(studio: Studio, prefix: str, limits: dict[str, Limit]) -> dict[str, gr.components.Component]:
    """The IP-Adapter controls by field name (``FIELDS`` order), folded in an accordion."""

    def elem_id(name: str) -> str:
        return f"{prefix}-{name.replace('_', '-')}"

    found: dict[str, gr.components.Component] = {}
    with gr.Accordion("IP-Adapter", open=False, elem_id=f"{prefix}-ip-adapter-box"):
        found["ip_adapter"] = refreshable_menu(
            "ip_adapter", adapter_choices, OFF, elem_id("ip_adapter"), f"{prefix}-ip-adapter-refresh"
        )
        found["ip_adapter_weight"] = field_control("ip_adapter_weight", limits, elem_id("ip_adapter_weight"))
        # A gallery has no tooltip: the schema's label only.
        found["ip_adapter_image"] = picture_input(
            ReferencePictures, studio.engine.settings.max_image_pixels, value=None, type="filepath",
            file_types=["image"], interactive=True, columns=4, height=200, label=words("ip_adapter_image")["label"],
            elem_id=elem_id("ip_adapter_image"),
        )
    return {name: found[name] for name in FIELDS}
