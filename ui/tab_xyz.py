"""The X/Y/Z plot tab (A1111's script): two axes make a grid of txt2img cells, a third makes several grids."""

from __future__ import annotations

from typing import Any

import gradio as gr

from backend.grid.axes import AXES, NOTHING
from backend.grid.xyz import XYZRequest
from backend.grid.xyz_runner import XYZResult, XYZRunner

from .common import COMMON_FIELDS, build_common_controls
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, tab_handler
from .inputs import FieldDropdown
from .output import build_output_block
from .studio import Studio
from .wiring import wire_generation

# The common fields the plot takes: each cell makes one picture.
XYZ_FIELDS = tuple(name for name in COMMON_FIELDS if name != "batch_size")
VALUES_HELP = 'Comma-separated; ranges 1-5, 1-10 (+2), 1-10 [5]; quote a value with commas: "a, b", c'
DEFAULTS = {"x": ("Seed", "1-3"), "y": ("Steps", "10, 20"), "z": (NOTHING, "")}


def build_tab(studio: Studio) -> TabHandle:
    runner = XYZRunner(studio.engine)
    own: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            controls = build_common_controls(studio, "xyz", fields=XYZ_FIELDS)
            for name, (kind, values) in DEFAULTS.items():
                with gr.Row(equal_height=True):
                    own[f"{name}_type"] = FieldDropdown(
                        list(AXES), value=kind, label=f"{name.upper()} type", scale=1, elem_id=f"xyz-{name}-type"
                    )
                    own[f"{name}_values"] = gr.Textbox(
                        values, label=f"{name.upper()} values", info=VALUES_HELP, scale=3, elem_id=f"xyz-{name}-values"
                    )
        with gr.Column(scale=1):
            sheets: list[gr.Gallery] = []
            out = build_output_block(
                "xyz",
                lead=lambda: sheets.append(
                    gr.Gallery(label="Grids (one per Z value)", format="png", columns=1, height=520,
                               interactive=False, elem_id="xyz-sheets")
                ),
                gallery_label="Cells (each captioned with its axis values and time)",
                gallery_height=300,
            )
            labels = gr.JSON(label="Cell labels", visible=False, elem_id="xyz-labels")

    def xyz_plot(values, request, progress):
        """A1111's X/Y/Z plot: one txt2img picture per combination of the axes' values, one grid per Z value.

        ``x_type``/``y_type``/``z_type``: Seed, Steps, CFG Scale, Sampler, Schedule type, Prompt S/R, Checkpoint
        name, VAE, Clip skip, Denoising (hires pass), Distilled CFG Scale, or Nothing; ``*_values``: comma-separated,
        with ranges (``1-5``, ``1-10 (+2)``, ``1-10 [5]``). Returns the cell images (PNG, captioned with their
        labels, each with its infotext), the plot's infotext, the seed, the grid images and the cell labels.
        """
        req = build_request(XYZRequest, values)
        yield from stream_generation(
            studio, req, request, progress, extras=_extras, runner=runner, final=_final, tab="xyz_plot"
        )

    handler = tab_handler(
        xyz_plot,
        XYZRequest,
        controls.fields,
        required=("x_type", "x_values"),
        optional=("y_type", "y_values", "z_type", "z_values"),
    )
    wire_generation(studio, controls, out, handler, own, "xyz_plot", [sheets[0], labels])
    return TabHandle("x/y/z plot", controls, out)


def _final(result: XYZResult) -> tuple[list[Any], str, int]:
    return list(zip(result.images, result.labels, strict=True)), result.infotext, result.seed


def _extras(result: XYZResult | None) -> tuple[Any, ...]:
    if result is None:
        return (None, None)  # only counted while running
    return result.grids, result.labels
