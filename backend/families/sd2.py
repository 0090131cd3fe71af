"""SD 2.x (2.0, 2.1, SD-Turbo): one OpenCLIP text encoder; 768-v models predict v, 512-base ones eps.

A single file does not say which: like diffusers we assume the 768-v model unless an A1111 ``name.yaml`` sidecar
says otherwise, and the model list shows which one it is.
"""

from __future__ import annotations

from backend.families.base import NO_SAFETY_CHECKER, Family

FAMILY = Family(
    name="sd2",
    label="SD 2.x",
    model_types={"v2": False, "inpainting_v2": True},
    single_file_pipeline="StableDiffusionPipeline",
    default_prediction="v_prediction",
    prediction_varies=True,
    pretrained_kwargs=NO_SAFETY_CHECKER,
    grid_batching=True,  # the same pipeline class as SD 1.x
)
