"""How the app's small UI events are registered (not generations, which share the "gpu" concurrency id)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sd_studio.ui")

# Instant, silent updates (a seed reset, a schedule list): no queue, not part of the public API.
QUIET: dict[str, Any] = {"queue": False, "api_visibility": "private"}
# Quick events that may say something: Gradio shows gr.Info/gr.Warning toasts only for events that go through the
# queue; no concurrency limit, so they never wait behind a generation.
TOASTING: dict[str, Any] = {"queue": True, "concurrency_limit": None, "api_visibility": "private"}


def refuse(message: str) -> Exception:
    """The error for bad input: shown on the page, logged as one line, no traceback (that is for real failures)."""
    import gradio as gr

    log.info("refused: %s", message)
    return gr.Error(message, print_exception=False)
