"""The "ADetailer" accordion every generating tab has: the detail pass's fields (``backend.schema.detail``).

The model menu lists the detector files of ``models/adetailer`` (and ``SDSTUDIO_ADETAILER_DIRS``), "None" first, which
is off; its Refresh button scans the folders again. The other controls are built from the schema alone.
"""

from __future__ import annotations

import gradio as gr

from backend.models.detectors import Detectors
from backend.schema.detail import DETAIL_FIELDS, OFF
from backend.schema.fields import Limit

from .controls import field_control, refreshable_menu, words
from .studio import Studio

FIELDS = tuple(DETAIL_FIELDS)  # laid out here, not by the common controls' generic builder


def detector_choices(detectors: Detectors) -> list[str]:
    return [OFF, *detectors.names()]


def build_detail(studio: Studio, prefix: str, limits: dict[str, Limit]) -> dict[str, gr.components.Component]:
    """The detail controls by field name, folded in an accordion."""
    detectors = studio.engine.detectors

    def elem_id(name: str) -> str:
        return f"{prefix}-{name.replace('_', '-')}"

    found: dict[str, gr.components.Component] = {}
    with gr.Accordion("ADetailer", open=False, elem_id=f"{prefix}-adetailer"):
        found["ad_model"] = refreshable_menu(
            "ad_model", lambda: detector_choices(detectors), OFF, elem_id("ad_model"), f"{prefix}-ad-refresh"
        )
        for name in ("ad_prompt", "ad_negative_prompt"):
            found[name] = gr.Textbox("", lines=2, elem_id=elem_id(name), **words(name))
        with gr.Row():
            for name in ("ad_confidence", "ad_denoising_strength"):
                found[name] = field_control(name, limits, elem_id(name))
        with gr.Row():
            for name in ("ad_mask_blur", "ad_inpaint_only_masked_padding"):
                found[name] = field_control(name, limits, elem_id(name))

    return {name: found[name] for name in FIELDS}
