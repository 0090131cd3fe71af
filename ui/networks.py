"""The LoRA / embedding picker under every tab's prompt: choosing one inserts its tag into the prompt."""

from __future__ import annotations

import gradio as gr

from backend.generation.engine import Engine
from backend.generation.networks import insert_tag

from .events import QUIET


def network_choices(engine: Engine) -> list[tuple[str, str]]:
    """(label, "kind:name") for every LoRA and embedding found in the folders."""
    networks = engine.networks
    loras = [(f"LoRA: {name}", f"lora:{name}") for name in sorted(networks.loras, key=str.lower)]
    embeddings = [(f"Embedding: {name}", f"embedding:{name}") for name in sorted(networks.embeddings, key=str.lower)]
    return loras + embeddings


def build_network_picker(engine: Engine, prefix: str, prompt: gr.Textbox) -> gr.Dropdown:
    """A dropdown of the LoRAs and embeddings (``<lora:name:1>`` or the embedding's name goes into ``prompt``) and
    a Refresh button that scans their folders again."""
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(
            network_choices(engine),
            value=None,
            label="Add a LoRA or embedding to the prompt",
            info="Edit the weight in the prompt: <lora:name:0.8>",
            scale=8,
            elem_id=f"{prefix}-networks",
        )
        refresh = gr.Button(
            "Refresh",
            size="sm",
            scale=0,
            min_width=80,
            elem_classes=["tool-button"],
            elem_id=f"{prefix}-refresh-networks",
        )

    def insert(text: str, chosen: str | None):
        if not chosen:
            return gr.skip(), gr.skip()
        kind, name = chosen.split(":", 1)
        return insert_tag(text or "", kind, name), gr.Dropdown(value=None)

    def rescan():
        engine.networks.refresh()
        return gr.Dropdown(choices=network_choices(engine), value=None)

    # .input: only the user's own pick inserts (resetting the dropdown afterwards must not insert again).
    picker.input(insert, [prompt, picker], [prompt, picker], **QUIET)
    refresh.click(rescan, outputs=picker, **QUIET)
    return picker
