"""What the app hands every tab: ``Studio`` (what a built tab hands back is ``ui.handle.TabHandle``)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend.generation.engine import Engine

from .session import CancelRegistry


@dataclass
class Studio:
    """What every tab needs from the app: the engine and the per-session stop registry."""

    engine: Engine
    cancels: CancelRegistry
    preset_storage: gr.BrowserState | None = None  # the page's own presets when nobody is logged in
