"""Stable Diffusion 3 and 3.5 (Medium, Large, Large Turbo): an MMDiT transformer, two CLIP encoders and T5, a
16-channel VAE, rectified flow, 1024² pictures.

The request's CFG scale is the pipeline's ``guidance_scale`` (real CFG, as on SD). Refused by field name: clip
skip, DeepCache, skip CFG after, distilled CFG (no SD3 model is guidance-distilled), ControlNet
(``control_type``, none yet), samplers outside the flow table, latent hires upscalers, LoRAs and embeddings. Eta
is accepted and ignored, as A1111 does for samplers whose step takes none (no flow sampler does).
Inpainting blends latents (StableDiffusion3InpaintPipeline); the grid runs one pipeline call per cell.
"""

from __future__ import annotations

from backend.families.base import LATENT_BLENDING, Family

FAMILY = Family(
    name="sd3",
    label="SD 3.x",
    model_types={},  # single checkpoint files (and their detection) are a later increment: folders and hub ids now
    single_file_pipeline="StableDiffusion3Pipeline",
    default_prediction="flow_prediction",
    supports=frozenset(),
    ignores=frozenset({"eta"}),  # no flow sampler takes eta: as SD's Euler in A1111, run without it, not written
    controlnet_types=frozenset(),  # none yet: a ControlNet request is refused by its field control_type
    inpaint_strategies=(LATENT_BLENDING,),
    sampler_table="flow",
    prompt_weighting=False,
    pipeline_drops=frozenset({"eta"}),
    img2img_size=True,  # StableDiffusion3Img2ImgPipeline would resize the picture to its default size
    latent_hires=False,
    networks=False,
)
