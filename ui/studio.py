"""What the app hands every tab (``Studio``) and what a built tab hands back (``TabHandle``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gradio as gr

from backend.generation.engine import Engine

from .session import CancelRegistry

if TYPE_CHECKING:
    from .common import CommonControls
    from .output import OutputControls


@dataclass
class Studio:
    """What every tab needs from the app: the engine and the per-session stop registry."""

    engine: Engine
    cancels: CancelRegistry
    preset_storage: gr.BrowserState | None = None  # the page's own presets when nobody is logged in


@dataclass
class TabHandle:
    """What the app needs of a built tab to wire "Send to …" between tabs."""

    tab_id: str
    controls: CommonControls
    out: OutputControls
    image_input: gr.components.Component | None = None  # where a sent image lands
    fields: dict[str, gr.components.Component] = field(default_factory=dict)  # tab-only request fields Send sets
