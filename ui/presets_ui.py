"""The preset row every tab has: apply a named bundle of settings, or save the current ones."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend.presets import PRESET_FIELDS, PresetStore

from .schedule import schedule_dropdown


@dataclass
class PresetRow:
    choice: gr.Dropdown
    apply: gr.Button
    name: gr.Textbox
    save: gr.Button


def build_preset_row(store: PresetStore, prefix: str) -> PresetRow:
    with gr.Accordion("Presets", open=False):
        with gr.Row(equal_height=True):
            choice = gr.Dropdown(list(store.presets), value=None, label="Preset", scale=3, elem_id=f"{prefix}-preset")
            apply = gr.Button("Apply", scale=1, elem_id=f"{prefix}-preset-apply")
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Save current settings as", scale=3, elem_id=f"{prefix}-preset-name")
            save = gr.Button("Save preset", scale=1, elem_id=f"{prefix}-preset-save")
    return PresetRow(choice, apply, name, save)


def wire_preset_row(store: PresetStore, row: PresetRow, targets: dict[str, gr.components.Component]) -> None:
    """``targets``: request field name → the tab's control for it (only fields the tab has)."""
    names = [n for n in PRESET_FIELDS if n in targets]
    components = [targets[n] for n in names]
    quiet = {"queue": False, "api_visibility": "private"}

    def apply(preset: str | None, *current):
        if not preset:
            raise gr.Error("Pick a preset first")
        if preset not in store.presets:
            raise gr.Error(f"Unknown preset {preset!r}")
        values = store.presets[preset].values
        updates = [values.get(n, gr.skip()) for n in names]
        if "schedule" in names and ("sampler" in values or "schedule" in values):
            now = dict(zip(names, current, strict=True))
            sampler = values.get("sampler", now.get("sampler"))
            updates[names.index("schedule")] = schedule_dropdown(sampler, values.get("schedule", now.get("schedule")))
        return updates

    def save(preset_name: str, *current):
        try:
            saved = store.save_user_preset(preset_name or "", dict(zip(names, current, strict=True)))
        except (ValueError, OSError) as err:
            raise gr.Error(str(err)) from None
        gr.Info(f"Saved preset {saved.name!r}")
        return gr.Dropdown(choices=list(store.presets), value=saved.name)

    # Presets saved in another tab (or by another user) show up as soon as the list is opened.
    row.choice.focus(lambda: gr.Dropdown(choices=list(store.presets)), None, row.choice, **quiet)
    row.apply.click(apply, [row.choice, *components], components, **quiet)
    row.save.click(save, [row.name, *components], row.choice, **quiet)
