"""SD 1.x (1.4, 1.5 and their fine-tunes): one CLIP ViT-L text encoder, 512² pictures, eps prediction."""

from __future__ import annotations

from backend.families.base import NO_SAFETY_CHECKER, SD_INPAINT_STRATEGIES, Family

FAMILY = Family(
    name="sd15",
    label="SD 1.x",
    model_types={"v1": False, "inpainting": True},
    single_file_pipeline="StableDiffusionPipeline",
    pretrained_kwargs=NO_SAFETY_CHECKER,
    grid_batching=True,  # StableDiffusionPipeline's loop is what the grid's batched denoising mirrors
    ip_adapter=True,
    inpaint_strategies=SD_INPAINT_STRATEGIES,  # the inpaint ControlNet too (controlnets.inpaint)
)
