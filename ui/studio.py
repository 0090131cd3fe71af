"""What the app hands every tab: ``Studio`` (what a built tab hands back is ``ui.handle.TabHandle``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from backend.generation.engine import Engine
from backend.library.history import UNOWNED, History, login_owner, owner_digest

from .session import CancelRegistry

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass
class Studio:
    """What every tab needs from the app: the engine and the per-session stop registry."""

    engine: Engine
    cancels: CancelRegistry
    preset_storage: gr.BrowserState | None = None  # the page's own presets when nobody is logged in
    history: History | None = None  # the saved pictures' index (ui/tab_history.py), when the server saves them

    def claim(self, result: Any, caller: gr.Request) -> None:
        """A run's saved pictures (a grid's sheet too, every Z sheet of an X/Y/Z plot) belong to its caller, for the
        History tab."""
        sheets = getattr(result, "grid_paths", None) or [getattr(result, "grid_path", None)]
        paths: list[Path] = [*getattr(result, "paths", ()), *filter(None, sheets)]
        if self.history is not None and paths:
            self.history.claim(paths, history_owner(caller))


def history_owner(caller: gr.Request) -> str:
    """Whose pictures: the login when there is one (the same on every device), else this page's session and
    address (as ``ui.session.owner_key`` keys runs)."""
    login = getattr(caller, "username", None)
    if login:
        return login_owner(login)
    client = getattr(caller, "client", None)
    return f"session\x00{caller.session_hash or ''}\x00{getattr(client, 'host', '') or ''}"


def visible_owners(caller: gr.Request) -> list[str]:
    """The owner digests whose pictures the caller sees: their own, plus the pictures nobody claimed (another
    tool's, the A1111 API's) when nobody is logged in and the caller sits at the server's own machine."""
    client = getattr(caller, "client", None)
    local = not getattr(caller, "username", None) and getattr(client, "host", "") in LOOPBACK
    return [owner_digest(history_owner(caller)), *([UNOWNED] if local else [])]
