"""The preset row every tab has: apply a named bundle of settings, or save the current ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from backend.library.presets import PRESET_FIELDS, PresetStore, own_presets

from .events import QUIET, TOASTING
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
            apply = gr.Button(
                "Apply", size="sm", scale=1, elem_classes=["tool-button"], elem_id=f"{prefix}-preset-apply"
            )
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Save current settings as", scale=3, elem_id=f"{prefix}-preset-name")
            save = gr.Button(
                "Save preset", size="sm", scale=1, elem_classes=["tool-button"], elem_id=f"{prefix}-preset-save"
            )
    return PresetRow(choice, apply, name, save)


def own_preset_storage() -> gr.BrowserState:
    """Where a visitor without a login keeps their presets: their browser (nothing of theirs on the server).

    The secret only keeps the stored value stable across server restarts; presets are no secret.
    """
    return gr.BrowserState([], storage_key="sd-studio-presets", secret="sd-studio-presets")


def _own_entries(store: PresetStore, stored: Any, request: gr.Request) -> list[Any]:
    login = getattr(request, "username", None)
    if login:
        return store.read_owner(login)
    return stored if isinstance(stored, list) else []


def wire_preset_row(
    store: PresetStore, row: PresetRow, targets: dict[str, gr.components.Component], storage: gr.BrowserState
) -> None:
    """``targets``: request field name → the tab's control for it (only fields the tab has); ``storage``: the
    page's browser storage for presets (used when nobody is logged in)."""
    names = [n for n in PRESET_FIELDS if n in targets]
    components = [targets[n] for n in names]

    def menu(stored: Any, request: gr.Request) -> gr.Dropdown:
        """The server's presets, then the user's own."""
        return gr.Dropdown(choices=[*store.presets, *own_presets(_own_entries(store, stored, request))])

    def apply(data: dict[Any, Any], request: gr.Request):
        # A toast in words, and nothing else changes (an error would badge the controls it was to set).
        preset = data[row.choice]
        if not preset:
            gr.Warning("Choose a preset in the Preset list first, then Apply.")
            return {c: gr.skip() for c in components}
        found = store.presets.get(preset) or own_presets(_own_entries(store, data[storage], request)).get(preset)
        if found is None:
            gr.Warning(f"There is no preset {preset!r} (any more): choose one from the list.")
            return {c: gr.skip() for c in components}
        gr.Info(f"Applied preset {preset!r}")
        values = found.values
        updates = {targets[n]: values[n] for n in names if n in values}
        if "schedule" in names and ("sampler" in values or "schedule" in values):
            sampler = values.get("sampler", data.get(targets.get("sampler")))
            schedule = values.get("schedule", data[targets["schedule"]])
            updates[targets["schedule"]] = schedule_dropdown(sampler, schedule)
        return updates

    def save(data: dict[Any, Any], request: gr.Request):
        login = getattr(request, "username", None)
        try:
            entries, saved = store.add_own(
                _own_entries(store, data[storage], request),
                data[row.name] or "",
                {n: data[targets[n]] for n in names},
            )
            if login:
                store.write_owner(login, entries)
        except (ValueError, OSError) as err:
            gr.Warning(str(err))
            return {row.choice: gr.skip(), storage: gr.skip()}
        where = "under your login" if login else "in this browser"
        gr.Info(f"Saved preset {saved.name!r} {where}")
        choices = [*store.presets, *own_presets(entries)]
        return {row.choice: gr.Dropdown(choices=choices, value=saved.name), storage: gr.skip() if login else entries}

    # Presets saved in another tab show up as soon as the list is opened.
    row.choice.focus(menu, storage, row.choice, **QUIET)
    row.apply.click(apply, {row.choice, storage, *components}, components, **TOASTING)
    row.save.click(save, {row.name, storage, *components}, [row.choice, storage], **TOASTING)
