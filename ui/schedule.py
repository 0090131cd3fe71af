"""The schedule-type dropdown always holds a pair the sampler supports, whoever sets it (menu, preset, PNG info).

Setting only the value of a dropdown whose choices belong to another sampler leaves it blank (or holding a value
Gradio then refuses at Generate), so every writer sends the choices with the value.
"""

from __future__ import annotations

import gradio as gr

from backend.families import family
from backend.generation.engine import Engine
from backend.schema.samplers import SAMPLER_TABLES, SCHEDULES, supported_schedules


def schedule_dropdown(sampler: str | None, schedule: str | None, table: str = "sd") -> gr.Dropdown:
    """The schedule types ``sampler`` takes in the sampler table ``table`` (the model family's), ``schedule`` kept
    where it is one of them."""
    allowed = supported_schedules(sampler, table) if sampler in SAMPLER_TABLES[table] else list(SCHEDULES)
    return gr.Dropdown(choices=allowed, value=schedule if schedule in allowed else allowed[0])


def sampler_table(engine: Engine, model: str) -> str:
    """The sampler table of ``model``'s family (SD's for a name the registry does not know)."""
    spec = engine.registry.models.get(model)
    return family(spec.family).sampler_table if spec else "sd"


def sampler_dropdowns(table: str, sampler: str | None, schedule: str | None) -> tuple[gr.Dropdown, gr.Dropdown]:
    """Sampler and schedule menus for a model whose family runs the sampler table ``table``: the choices it has,
    the current pair kept where the family has it (else its first sampler, Euler)."""
    samplers = list(SAMPLER_TABLES[table])
    chosen = sampler if sampler in samplers else samplers[0]
    return gr.Dropdown(choices=samplers, value=chosen), schedule_dropdown(chosen, schedule, table)
