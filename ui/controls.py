"""Controls for request fields, described by the schema: label, tooltip, range and step come from the field's
``FieldSpec`` and ``field_limits`` (the validator's own limits), so the UI never offers a value the backend refuses
and never words a field differently from the schema. What is the UI's own (elem_id, placeholder, layout, a
tooltip the schema has no words for) is given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from backend.schema.fields import Limit, field_default, field_spec
from backend.schema.requests import GenerationRequest

from .events import QUIET
from .inputs import FieldDropdown, FieldSlider


def words(name: str, cls: type = GenerationRequest, **overrides: Any) -> dict[str, Any]:
    """``label=`` and (where the schema has one) ``info=`` for field ``name`` of ``cls``; ``overrides`` win."""
    meta = field_spec(cls, name)
    described = {"label": meta.label or name.replace("_", " ").capitalize()}
    if meta.info:
        described["info"] = meta.info
    return described | overrides


def limit_slider(label: str, limit: Limit, value: float, elem_id: str, **kwargs: Any) -> gr.Slider:
    """A slider over a validator limit (``field_limits``): its range and (unless given) step are the backend's."""
    options = {"step": limit.step, **kwargs}
    return FieldSlider(limit.minimum, limit.maximum, value=value, label=label, elem_id=elem_id, **options)


def field_slider(
    name: str,
    limits: dict[str, Limit],
    elem_id: str,
    value: float | None = None,
    cls: type = GenerationRequest,
    **kwargs: Any,
) -> gr.Slider:
    """A slider for field ``name`` of ``cls``: range and step from ``limits``, label and tooltip from the schema,
    value the field's default unless given. ``kwargs`` (e.g. a coarser ``step``, another ``label``) win."""
    options = words(name, cls) | kwargs
    label = options.pop("label")
    start = field_default(cls, name) if value is None else value
    return limit_slider(label, limits[name], start, elem_id, **options)


def field_control(name: str, limits: dict[str, Limit], elem_id: str, cls: type = GenerationRequest) -> Any:
    """A control for a field no builder lays out by hand, read from the schema alone: a slider over its limit, a
    checkbox for a yes/no, else a text box; its value is the field's default."""
    value = field_default(cls, name)
    if name in limits:
        return field_slider(name, limits, elem_id, value, cls)
    if isinstance(value, bool):
        return gr.Checkbox(value, elem_id=elem_id, **words(name, cls))
    return gr.Textbox(value, elem_id=elem_id, **words(name, cls))


def tool_button(text: str, elem_id: str) -> gr.Button:
    """A small button beside a field, at the field's height (the ``tool-button`` class in ui/app.py's CSS)."""
    return gr.Button(text, size="sm", scale=0, min_width=80, elem_classes=["tool-button"], elem_id=elem_id)


def refreshable_menu(name: str, choices: Callable[[], list[str]], off: str, elem_id: str,
                     refresh_id: str) -> FieldDropdown:
    """Field ``name``'s menu of files in a folder (``choices()``, ``off`` first) with a Refresh button that scans
    again, keeping the choice while it is still there. Custom values reach the engine, which names the files it has
    and the folder they belong in."""
    with gr.Row(equal_height=True):
        menu = FieldDropdown(choices(), value=off, scale=8, allow_custom_value=True, elem_id=elem_id, **words(name))
        refresh = tool_button("Refresh", refresh_id)

    def refreshed(current: str) -> gr.Dropdown:
        listed = choices()
        return gr.Dropdown(choices=listed, value=current if current in listed else off)

    refresh.click(refreshed, inputs=menu, outputs=menu, **QUIET)
    return menu
