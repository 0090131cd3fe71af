"""The X/Y/Z plot's axes as A1111 names and parses them: what each axis sets, and its values from text.

Values are A1111's: a comma-separated list (a value with a comma in it is quoted, ``"a, b", c``), and for numbers
ranges: ``1-5`` (every integer), ``1-10 (+2)`` (a step), ``1-10 [5]`` (that many values, evenly spread). A wrong
value raises ``ValidationError`` naming the axis's values field (``x_values``…) and saying what to change.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.schema.errors import ValidationError

NOTHING = "Nothing"
_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+\.?\d*|\.\d+)"
_RANGE_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]\s*\d+)\s*\))?\s*")
_COUNT_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
_RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]\s*(?:\d+\.?\d*|\.\d+))\s*\))?\s*")
_COUNT_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


@dataclass(frozen=True)
class Axis:
    """An axis type: its A1111 name, the request field it sets (or how), and its values' kind.

    ``option``: the family option (``backend.families.OPTIONS``) the model must support, for family-specific
    axes. ``hires_only``: it sets the hires pass (Denoising in txt2img)."""

    name: str
    field: str  # the request field it sets ("prompt" for Prompt S/R, "" for Nothing)
    kind: str  # "int", "float", "str" or "none"
    option: str = ""
    hires_only: bool = False


AXES = {
    axis.name: axis
    for axis in (
        Axis(NOTHING, "", "none"),
        Axis("Seed", "seed", "int"),
        Axis("Steps", "steps", "int"),
        Axis("CFG Scale", "guidance_scale", "float"),
        Axis("Sampler", "sampler", "str"),
        Axis("Schedule type", "schedule", "str"),
        Axis("Prompt S/R", "prompt", "str"),
        Axis("Checkpoint name", "model", "str"),
        Axis("VAE", "vae", "str"),
        Axis("Clip skip", "clip_skip", "int"),
        Axis("Denoising", "strength", "float", hires_only=True),
        Axis("Distilled CFG Scale", "distilled_cfg_scale", "float", option="distilled_cfg_scale"),
    )
}


def split_csv(text: str) -> list[str]:
    """A1111's list: comma-separated, each stripped; a quoted value may hold commas (``"a, b", c``)."""
    rows = csv.reader(io.StringIO(text.strip()), skipinitialspace=True)
    return [value.strip() for row in rows for value in row if value.strip()]


def parse_values(axis_name: str, text: str | list[Any] | None, where: str) -> list[Any]:
    """An axis's values from its text (or a list of values), ranges expanded; ``where``: the values field."""
    axis = axis_type(axis_name, where.replace("values", "type"))
    if axis.kind == "none":
        return []
    raw = [str(v) for v in text] if isinstance(text, list | tuple) else split_csv(text or "")
    if not raw:
        raise ValidationError(where, f"{_what(axis, where)}: give its values, separated by commas")
    if axis.kind == "int":
        return [v for item in raw for v in _numbers(item, axis, where, int)]
    if axis.kind == "float":
        return [v for item in raw for v in _numbers(item, axis, where, float)]
    return raw


def axis_type(name: str, where: str) -> Axis:
    """The axis called ``name`` (A1111's spelling; case and spaces forgiven) or an error listing them."""
    found = AXES.get(name) or next((a for a in AXES.values() if a.name.lower() == str(name).strip().lower()), None)
    if found is None:
        raise ValidationError(where, f"unknown axis type {name!r}; choose one of: {', '.join(AXES)}")
    return found


def _numbers(item: str, axis: Axis, where: str, kind: Callable[[str], Any]) -> list[Any]:
    """One list entry: a number, a range with an optional step, or a range with a count."""
    is_int = kind is int
    count = (_COUNT_INT if is_int else _COUNT_FLOAT).fullmatch(item)
    ranged = (_RANGE_INT if is_int else _RANGE_FLOAT).fullmatch(item)
    try:
        if count:
            start, end, number = float(_nospace(count[1])), float(_nospace(count[2])), int(count[3])
            if number < 1:
                raise ValueError
            spread = np.linspace(start, end, num=number)
            return [int(v) for v in spread.astype(int)] if is_int else [round(float(v), 6) for v in spread]
        if ranged:
            start, end = kind(_nospace(ranged[1])), kind(_nospace(ranged[2]))
            step = kind(_nospace(ranged[3])) if ranged[3] else 1
            return _range(start, end, step, is_int)
        return [kind(item)]
    except (ValueError, ZeroDivisionError):
        what = "whole numbers" if is_int else "numbers"
        raise ValidationError(
            where,
            f"{_what(axis, where)}: {item!r} is not a value; give {what}, ranges (1-5), ranges with a step "
            "(1-10 (+2)) or with a count (1-10 [5]), separated by commas",
        ) from None


def _range(start: Any, end: Any, step: Any, is_int: bool) -> list[Any]:
    """``start`` to ``end`` inclusive by ``step`` (A1111: ``range(start, end + 1, step)``, ``arange`` for floats)."""
    if step == 0:
        raise ZeroDivisionError
    if is_int:
        return list(range(start, end + (1 if step > 0 else -1), step))
    values = np.arange(start, end + step, step)
    return [round(float(v), 6) for v in values if (v <= end + 1e-9 if step > 0 else v >= end - 1e-9)]


def _what(axis: Axis, where: str) -> str:
    """How a message names the axis: "X axis (Steps)" for the field ``x_values``."""
    return f"{where[0].upper()} axis ({axis.name})" if where[1:] == "_values" else axis.name


def _nospace(text: str) -> str:
    return re.sub(r"\s+", "", text)


def prompt_replace(text: str, search: str, value: str) -> str:
    """Prompt S/R: every ``search`` in ``text`` replaced by ``value`` (the first value is the one searched for)."""
    return text.replace(search, value)


def value_label(axis: Axis, value: Any) -> str:
    """A value as a header shows it: numbers short (7.0 → 7), text as it is, VAE "" as Automatic."""
    if axis.kind == "float":
        return f"{value:g}"
    if axis.field == "vae" and not value:
        return "Automatic"
    return str(value)
