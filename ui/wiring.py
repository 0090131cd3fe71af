"""Generate, Stop, Reuse seed and the preset row of a generating tab: the events every tab wires the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr

from .common import CommonControls
from .events import QUIET
from .generation import owner_of, stopped_message
from .handlers import input_names
from .output import OutputControls
from .presets_ui import wire_preset_row
from .studio import Studio

Component = gr.components.Component


def handler_inputs(
    handler: Callable[..., Any], controls: CommonControls, own: Mapping[str, Component]
) -> list[Component]:
    """The input component of each of ``handler``'s parameters, in the signature's order: a common field's control,
    else the tab's own control of that name."""
    return [controls[name] if name in controls.fields else own[name] for name in input_names(handler)]


def wire_generation(
    studio: Studio,
    controls: CommonControls,
    out: OutputControls,
    handler: Callable[..., Any],
    own: Mapping[str, Component],
    api_name: str,
    extra_outputs: list[Component] | None = None,
) -> None:
    """Generate/Stop/reuse-seed/preset wiring shared by every tab; ``handler`` is the tab's API function.

    ``own``: the tab's own controls by parameter name; each parameter of ``handler`` gets its control as input.
    A preset sets the common controls and those of ``own`` it has values for (``PRESET_FIELDS``, e.g. strength).
    """
    if controls.presets is not None:
        wire_preset_row(studio.engine.presets, controls.presets, controls.components | dict(own), studio.preset_storage)

    # Stop acts on the running run through the registry (its ``start``), and Gradio's own ``cancels`` drops this
    # page's run of this tab still waiting in the queue. The per-client bound is checked where jobs join the queue
    # (ui/queue_share.py).
    # Stop is live only while this tab's run is queued or running: one chain, so the three always come in order.
    started = out.generate.click(lambda: gr.Button(interactive=True), None, out.stop, **QUIET)
    generation = started.then(
        handler,
        inputs=handler_inputs(handler, controls, own),
        outputs=out.outputs() + (extra_outputs or []),
        api_name=api_name,
        concurrency_id="gpu",
        # No overlay over the outputs: the live preview, the progress line and the last seed stay readable.
        show_progress="minimal",
    )

    generation.then(lambda: gr.Button(interactive=False), None, out.stop, **QUIET)

    def stop(request: gr.Request) -> Any:
        runs = studio.cancels.cancel(owner_of(request), api_name)
        idle = gr.Button(interactive=False)
        if runs:
            return stopped_message(runs[0].step, runs[0].total), idle
        # Still queued (Gradio's cancel drops it) or already over: the last result stays on screen.
        return gr.skip(), idle

    # Only this tab's runs of this caller. Gradio's own cancel (tied to this page's session and this event) also
    # drops a run still waiting in the queue at once, instead of a spinner until other people's runs end.
    out.stop.click(stop, outputs=[out.infotext, out.stop], queue=False, api_visibility="private", cancels=[generation])
    controls.reuse_seed.click(
        lambda s: -1 if s is None else s, out.seed_used, controls["seed"], queue=False, api_visibility="private"
    )
