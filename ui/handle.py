"""What a built tab hands back to the app (``TabHandle``), for wiring "Send to …" between tabs."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from .common import CommonControls
from .output import OutputControls


@dataclass
class TabHandle:
    """What the app needs of a built tab to wire "Send to …" between tabs."""

    tab_id: str
    controls: CommonControls
    out: OutputControls
    image_input: gr.components.Component | None = None  # where a sent image lands
    fields: dict[str, gr.components.Component] = field(default_factory=dict)  # tab-only request fields Send sets
