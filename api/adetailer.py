"""The ADetailer extension's words → SD Studio's: ``alwayson_scripts.ADetailer`` as the extension's API takes it.

Its ``args`` are an optional enable flag and a "skip img2img" flag, then one dict per detail unit with the
extension's argument names, which are our field names (``backend.schema.detail``). A unit whose ``ad_model`` is
"None" is off. SD Studio runs one unit; a second enabled one, or a unit asking for what the pass does not do (its own
steps, sampler or checkpoint, whole-picture inpainting), is refused by name rather than ignored.
"""

from __future__ import annotations

from typing import Any

from backend.schema.detail import DETAIL_FIELDS, OFF
from backend.schema.errors import ValidationError

from .models import GenerationBody

SCRIPT = "alwayson_scripts.ADetailer"
SCRIPT_NAME = "adetailer"  # its key in alwayson_scripts (any case) and its title in /sdapi/v1/scripts


def _args(body: GenerationBody) -> list[Any]:
    script = next((v for k, v in body.alwayson_scripts.items() if k.lower() == SCRIPT_NAME), None)
    if script is None:
        return []
    args = script.get("args") if isinstance(script, dict) else None
    if not isinstance(args, list):
        raise ValidationError(f"{SCRIPT}.args", "args must be a list: [enabled, skip img2img, {ad_model: …}, …]")
    if args and isinstance(args[0], bool) and not args[0]:
        return []  # the extension's own switch, off
    return args


def _unit(unit: dict[str, Any], index: int) -> dict[str, Any]:
    where = f"{SCRIPT}.args[{index}]"
    for key, value in unit.items():
        if key.startswith("ad_use_") and value:
            raise ValidationError(f"{where}.{key}", f"the detail pass uses the main pass's setting: leave {key} out")
    if unit.get("ad_inpaint_only_masked", True) is False:
        raise ValidationError(f"{where}.ad_inpaint_only_masked", "the detail pass always inpaints only the boxes")
    fields: dict[str, Any] = {}
    for name, (kind, _) in DETAIL_FIELDS.items():
        if unit.get(name) is None:
            continue
        value = unit[name]
        if kind == "str" and not isinstance(value, str):
            raise ValidationError(f"{where}.{name}", f"{name} must be text")
        fields[name] = value
    return fields


def adetailer_fields(body: GenerationBody) -> dict[str, Any]:
    """The detail fields of the request (none: no detail pass, the request's defaults stay)."""
    units = [
        (index, unit)
        for index, unit in enumerate(_args(body))
        if isinstance(unit, dict) and unit.get("ad_model", OFF) != OFF and unit.get("ad_tab_enable", True)
    ]
    if len(units) > 1:
        raise ValidationError(f"{SCRIPT}.args[{units[1][0]}]", "SD Studio runs one ADetailer unit: send one")
    return _unit(units[0][1], units[0][0]) if units else {}
