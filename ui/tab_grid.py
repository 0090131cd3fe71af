"""The sampler grid tab (X/Y plot): samplers × step counts or CFG scales, one labelled grid image."""

from __future__ import annotations

from typing import Any

import gradio as gr

from backend.generation.engine import Engine
from backend.grid.plan import GridRequest, sampler_choices, split_list
from backend.grid.runner import GridResult, grid_runner

from .common import COMMON_FIELDS, build_common_controls
from .events import QUIET
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, tab_handler
from .inputs import FieldDropdown
from .output import build_output_block
from .schedule import sampler_table
from .studio import Studio
from .wiring import wire_generation

# The common fields the grid takes: samplers are its X axis, and it always makes one image per cell.
GRID_FIELDS = tuple(name for name in COMMON_FIELDS if name not in ("sampler", "batch_size"))
DEFAULT_SAMPLERS = ["Euler a", "Euler", "DPM++ 2M", "DDIM"]


def build_tab(studio: Studio) -> TabHandle:
    runner = grid_runner(studio.engine)
    with gr.Row():
        with gr.Column(scale=1):
            controls = build_common_controls(studio, "grid", fields=GRID_FIELDS)
            samplers = FieldDropdown(
                sampler_choices(),
                value=DEFAULT_SAMPLERS,
                multiselect=True,
                allow_custom_value=True,  # an unknown name gets the backend's message, not a list of 60 choices
                label="Samplers (X axis)",
                info="A plain name uses the Schedule type above where the sampler supports it; "
                "“DPM++ 2M Karras” names its own.",
                elem_id="grid-samplers",
            )
            steps_list = gr.Textbox(
                "10, 20, 30",
                label="Steps (Y axis)",
                info="Comma-separated. CFG scale above applies to every cell.",
                elem_id="grid-steps-list",
            )
            cfg_list = gr.Textbox(
                "",
                label="CFG scales (Y axis instead of steps)",
                placeholder="4, 7, 10",
                info="Clear the steps to use this; Steps above then applies to every cell.",
                elem_id="grid-cfg-list",
            )
        with gr.Column(scale=1):
            sheet: list[gr.Image] = []
            # The finished grid first and large; the cells, captioned with their labels, below it.
            out = build_output_block(
                "grid",
                lead=lambda: sheet.append(
                    gr.Image(
                        label="Grid",
                        type="filepath",
                        format="png",
                        interactive=False,
                        height=520,
                        elem_id="grid-sheet",
                    )
                ),
                gallery_label="Cells (each captioned with its sampler and steps or CFG)",
                gallery_height=300,
            )
            grid = sheet[0]
            # For API clients (the same words as the captions); the page shows them on the cells and the sheet.
            labels = gr.JSON(label="Cell labels", visible=False, elem_id="grid-labels")

    def sampler_grid(values, request, progress):
        """Compare samplers: one image per sampler × step count (or × CFG scale), same prompt and seed.

        ``samplers``: names, or A1111's combined form with a schedule ("DPM++ 2M Karras"); ``steps_list`` or
        ``cfg_list``: comma-separated numbers (give one). Returns the cell images (PNG, captioned with their
        labels), the grid's infotext, the seed, the grid image (PNG) and the cell labels.
        """
        req = build_request(
            GridRequest,
            values,
            samplers=list(values["samplers"] or []),
            steps_list=split_list(values["steps_list"]),
            cfg_list=split_list(values["cfg_list"]),
        )
        yield from stream_generation(
            studio, req, request, progress, extras=_extras, runner=runner, final=_final, tab="sampler_grid"
        )

    def on_model(model: str, chosen: list[str] | None) -> gr.Dropdown:
        return family_samplers(studio.engine, model, chosen)

    controls["model"].input(on_model, inputs=[controls["model"], samplers], outputs=samplers, **QUIET)

    own = {"samplers": samplers, "steps_list": steps_list, "cfg_list": cfg_list}
    handler = tab_handler(sampler_grid, GridRequest, controls.fields, required=tuple(own))
    wire_generation(studio, controls, out, handler, own, "sampler_grid", [grid, labels])
    return TabHandle("sampler grid", controls, out)


def family_samplers(engine: Engine, model: str, chosen: list[str] | None) -> gr.Dropdown:
    """The X axis menu of ``model``'s family (FLUX and SD 3.x run flow-matching samplers); the picked entries it has
    stay picked, else the default ones it has."""
    choices = sampler_choices(sampler_table(engine, model))
    kept = [entry for entry in chosen or [] if entry in choices]
    value = kept or [name for name in DEFAULT_SAMPLERS if name in choices]
    return gr.Dropdown(choices=choices, value=value, multiselect=True, allow_custom_value=True)


def _final(result: GridResult) -> tuple[list[Any], str, int]:
    # Each cell carries its infotext in ``info``, which Gradio's PNG keeps (never the saved files: see
    # generation._final).
    return list(zip(result.images, result.labels, strict=True)), result.infotext, result.seed


def _extras(result: GridResult | None) -> tuple[Any, ...]:
    if result is None:
        return (None, None)  # only counted while running
    return result.grid, result.labels
