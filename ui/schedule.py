"""The schedule-type dropdown always holds a pair the sampler supports, whoever sets it (menu, preset, PNG info).

Setting only the value of a dropdown whose choices belong to another sampler leaves it blank (or holding a value
Gradio then refuses at Generate), so every writer sends the choices with the value.
"""

from __future__ import annotations

import gradio as gr

from backend.schema.samplers import SAMPLERS, SCHEDULES, supported_schedules


def schedule_dropdown(sampler: str | None, schedule: str | None) -> gr.Dropdown:
    allowed = supported_schedules(sampler) if sampler in SAMPLERS else list(SCHEDULES)
    return gr.Dropdown(choices=allowed, value=schedule if schedule in allowed else allowed[0])
