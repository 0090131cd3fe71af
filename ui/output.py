"""The output column every generating tab has: Generate/Stop, the gallery, "Send to …", the seed and infotext."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

SEND_TARGETS = {"img2img": "Send to img2img", "inpaint": "Send to inpaint", "controlnet": "Send to ControlNet"}


@dataclass
class OutputControls:
    generate: gr.Button
    stop: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    seed_used: gr.Number
    selected: gr.State  # index of the gallery image the user clicked (0 until then)
    send_buttons: dict[str, gr.Button]  # target tab id → "Send to …" button

    def outputs(self) -> list[gr.components.Component]:
        return [self.gallery, self.infotext, self.seed_used]


def build_output_block(
    prefix: str, lead: Callable[[], Any] | None = None, gallery_label: str = "Images", gallery_height: int = 480
) -> OutputControls:
    """Generate/Stop, then the results. ``lead`` builds what comes first under the buttons (the grid's sheet)."""
    with gr.Row(elem_classes=["run-buttons"]):
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id=f"{prefix}-stop")  # live only mid-run
    if lead is not None:
        lead()
    # Not interactive: an output, so no "Drop Media Here" upload prompt while it is empty.
    gallery = gr.Gallery(
        label=gallery_label,
        format="png",
        columns=2,
        height=gallery_height,
        interactive=False,
        elem_id=f"{prefix}-gallery",
    )
    with gr.Row():
        send = {
            target: gr.Button(label, size="sm", elem_id=f"{prefix}-send-{target}")
            for target, label in SEND_TARGETS.items()
        }
    # Empty (not 0) until a run has finished; the API still returns an int.
    seed_used = gr.Number(
        label="Seed used",
        value=None,
        placeholder="after a run",
        precision=0,
        interactive=False,
        elem_id=f"{prefix}-seed-used",
    )
    infotext = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id=f"{prefix}-infotext")
    selected = gr.State(0)
    gallery.select(_selected_index, None, selected, queue=False, api_visibility="private")
    gallery.change(lambda: 0, None, selected, queue=False, api_visibility="private")
    return OutputControls(generate, stop, gallery, infotext, seed_used, selected, send)


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index
