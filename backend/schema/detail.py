"""The detail pass's request fields (A1111's ADetailer extension), declared once with their specs.

``detailed_dataclass`` makes ``GenerationRequest`` a dataclass with these fields after its own, so every task, the
grid and both APIs have them, and the UI, infotext and A1111 conversion derive from the specs as for any field. Their
names are the extension's argument names; their infotext keys are the ones it writes. ``ad_model`` "None" is off.
The pass itself is ``backend.generation.detail``; the detectors ``backend.models.detectors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.schema.fields import Limit, spec

OFF = "None"  # the extension's "no model": no detail pass
A1111 = "alwayson_scripts.ADetailer.args[0]."  # where an A1111 caller sends them (api.adetailer)


def _on(value: Any) -> Any:
    """A key written only with a detail pass (the extension writes none without one)."""
    return lambda r: value(r) if r.ad_model not in ("", OFF) else None


def _field(default: Any, name: str, label: str, info: str = "", limit: Any = None) -> Any:
    return spec(default, label=label, info=info, limit=limit, infotext=label, written=_on(lambda r: getattr(r, name)),
                common=True, send=True, absent_means_default=True, a1111=A1111 + name)


# name → (type, field), in the order of the controls and of every tab's handler parameters.
DETAIL_FIELDS: dict[str, tuple[str, Any]] = {
    "ad_model": ("str", _field(OFF, "ad_model", "ADetailer model",
                               "A detector in models/adetailer: each thing it finds is repainted larger. None = off.")),
    "ad_prompt": ("str", _field("", "ad_prompt", "ADetailer prompt",
                                "What each found box is repainted with; empty = the main prompt ([PROMPT] = it).")),
    "ad_negative_prompt": ("str", _field("", "ad_negative_prompt", "ADetailer negative prompt",
                                         "Empty = the main negative prompt.")),
    "ad_confidence": ("float", _field(0.3, "ad_confidence", "ADetailer confidence",
                                      "Boxes the detector is less sure of are left alone.",
                                      lambda s: Limit(0.0, 1.0, 0.01))),
    "ad_denoising_strength": ("float", _field(0.4, "ad_denoising_strength", "ADetailer denoising strength",
                                              "How much of each box is redrawn: 0 keeps it, 1 ignores it.",
                                              lambda s: Limit(0.0, 1.0, 0.01))),
    "ad_mask_blur": ("int", _field(4, "ad_mask_blur", "ADetailer mask blur", "Soft edge of the pasted box, in "
                                   "pixels.", lambda s: Limit(0, 64))),
    # The extension's key for its "inpaint only masked padding".
    "ad_inpaint_only_masked_padding": ("int", _field(32, "ad_inpaint_only_masked_padding", "ADetailer inpaint padding",
                                                     "Context around each box the repaint sees, in pixels.",
                                                     lambda s: Limit(0, 256))),
}


def detailed_dataclass(cls: type) -> type:
    """``dataclass(cls)`` with the detail fields appended after the ones ``cls`` declares."""
    for name, (kind, value) in DETAIL_FIELDS.items():
        cls.__annotations__[name] = kind
        setattr(cls, name, value)
    return dataclass(cls)
