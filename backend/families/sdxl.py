"""SDXL: two text encoders (CLIP ViT-L and OpenCLIP bigG, concatenated, plus a pooled embedding), 1024² pictures.

Clip skip is accepted and ignored, as A1111 does by default (SDXL already reads the penultimate layer). The grid
runs its cells one pipeline call each: its batched loop does not build SDXL's pooled embeddings and size ids.
SDXL has no safety checker to turn off.
"""

from __future__ import annotations

from backend.families.base import SD_INPAINT_STRATEGIES, SD_OPTIONS, Family

FAMILY = Family(
    name="sdxl",
    label="SDXL",
    model_types={"xl_base": False, "xl_inpaint": True},
    single_file_pipeline="StableDiffusionXLPipeline",
    dual_text_encoders=True,
    supports=SD_OPTIONS - {"clip_skip"},
    ignores=frozenset({"clip_skip"}),
    ip_adapter=True,
    inpaint_strategies=SD_INPAINT_STRATEGIES,  # the inpaint ControlNet too (controlnets.inpaint)
    inpaint_control_masked=1.0,  # destitech/controlnet-inpaint-dreamer-sdxl: the area to repaint solid white
)
