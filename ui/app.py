"""Assemble the Blocks app: one tab per file, shared controls, one GPU queue."""

from __future__ import annotations

import gradio as gr

from backend.engine import Engine

from . import tab_txt2img
from .common import Studio
from .session import CancelRegistry

TITLE = "SD Studio"


def build_demo(engine: Engine) -> gr.Blocks:
    studio = Studio(engine=engine, cancels=CancelRegistry())
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}")
        if engine.startup_notice:
            gr.Markdown(f"**Note:** {engine.startup_notice}", elem_id="startup-notice")
        with gr.Tabs():
            with gr.Tab("txt2img", id="txt2img"):
                tab_txt2img.build_tab(studio)
    # One pipeline run at a time (one GPU); a bounded queue so a crowd gets "queue full", not a stall.
    demo.queue(default_concurrency_limit=1, max_size=engine.settings.queue_size)
    return demo
