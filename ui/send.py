""" "Send to …": carry an image and its parameters from one tab (a gallery, PNG info) to another tab."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr
from PIL import Image

from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.catalog import absent_defaults, carried_fields
from backend.schema.fields import specs
from backend.schema.requests import NOT_READ
from backend.schema.samplers import SAMPLERS, supported_schedules

from .events import TOASTING
from .handle import TabHandle
from .schedule import schedule_dropdown

# Request fields every target receives. Size goes only to tabs whose size does not follow their input image.
CARRIED = carried_fields()
SIZE = ("width", "height")

Loader = Callable[..., tuple[Image.Image | None, str]]


def open_image(source: Any) -> Image.Image:
    if isinstance(source, dict):  # Gallery payloads may arrive as {"image": {"path": ...}} too
        source = source.get("image", source)
        source = source.get("path", source) if isinstance(source, dict) else source
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image.load()
    return image


class NothingToSend(ValueError):
    """Send pressed where there is no picture: said in a toast, nothing changes."""


def from_gallery(gallery: Any, index: int | None, infotext: str) -> tuple[Image.Image, str]:
    """The selected gallery image and its parameters (its own PNG chunk first, else the tab's text)."""
    if not gallery:
        raise NothingToSend("There is no picture to send yet: Generate one first, then send it.")
    item = gallery[min(index or 0, len(gallery) - 1)]
    image = open_image(item[0] if isinstance(item, (list, tuple)) else item)
    return image, read_infotext(image) or infotext or ""


def sent_fields(cls: type, own: Mapping[str, gr.components.Component]) -> dict[str, gr.components.Component]:
    """The tab's own controls an infotext gives values for, which "Send to …" sets: fields of ``cls`` whose
    infotext key is read back, or whose missing key means their default (no Hires keys: no hires fix)."""
    readable = {
        item.name
        for item, meta in specs(cls)
        if meta.absent_means_default or (meta.infotext and meta.read is not NOT_READ)
    }
    return {name: control for name, control in own.items() if name in readable}


def carried_fields(target: TabHandle) -> list[str]:
    names = list(CARRIED) + ([] if target.controls.size_from_image else list(SIZE))
    return names + [name for name in target.fields if name not in names]


def unusable(fields: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """Values from another tool (an A1111 checkpoint name, a sampler we lack) that our dropdowns cannot hold."""
    dropped = {}
    if "model" in fields and fields["model"] not in models:
        dropped["model"] = fields["model"]
    sampler = fields.get("sampler")
    if sampler is not None and sampler not in SAMPLERS:
        dropped["sampler"] = sampler
        if "schedule" in fields:
            dropped["schedule"] = fields["schedule"]
    elif sampler is not None and fields.get("schedule") not in supported_schedules(sampler):
        dropped["schedule"] = fields.get("schedule")
    if fields.get("hr_resize_x") or fields.get("hr_resize_y"):  # the API's hires size: the tab has only a scale
        dropped["Hires resize"] = f"{fields.get('hr_resize_x', 0)}x{fields.get('hr_resize_y', 0)}"
    return dropped


def wire_send(
    button: gr.Button, inputs: list[gr.components.Component], load: Loader, target: TabHandle, tabs: gr.Tabs
) -> None:
    names = carried_fields(target)
    registry_names = [value for _, value in target.controls["model"].choices]  # Gradio keeps (label, value)
    controls = {name: target.controls.components.get(name) or target.fields.get(name) for name in names}
    image_out = [target.image_input] if target.image_input is not None else []

    def send(*values):
        try:
            image, infotext = load(*values)
        except NothingToSend as err:
            gr.Warning(str(err))
            return [gr.skip() for _ in range(len(image_out) + len(controls) + 1)]
        fields = parse_infotext(infotext).request_fields() if infotext else {}
        if infotext:  # a key left out means its default (no VAE key: the model's own VAE ran)
            fields = absent_defaults() | fields
        dropped = unusable(fields, registry_names)
        if dropped:
            gr.Warning("Not carried over (unknown here): " + ", ".join(f"{k} {v!r}" for k, v in dropped.items()))
        sent = [fields.get(name, gr.skip()) if name not in dropped else gr.skip() for name in names]
        if "sampler" in fields and "sampler" not in dropped and "schedule" in names:
            sent[names.index("schedule")] = schedule_dropdown(fields["sampler"], fields.get("schedule"))
        picture = [image.convert("RGB") if image is not None else gr.skip()] if image_out else []
        return [*picture, *sent, gr.Tabs(selected=target.tab_id)]

    button.click(send, inputs=inputs, outputs=[*image_out, *controls.values(), tabs], **TOASTING)


def wire_gallery_sends(handles: dict[str, TabHandle], tabs: gr.Tabs) -> None:
    for source in handles.values():
        for target_id, button in source.out.send_buttons.items():
            inputs = [source.out.gallery, source.out.selected, source.out.infotext]
            wire_send(button, inputs, from_gallery, handles[target_id], tabs)
