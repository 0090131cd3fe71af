"""Stable Diffusion 3 and 3.5 (Medium, Large, Large Turbo): an MMDiT transformer, two CLIP encoders and T5, a
16-channel VAE, rectified flow, 1024² pictures.

The request's CFG scale is the pipeline's ``guidance_scale`` (real CFG, as on SD). Refused by field name: clip
skip, DeepCache (``dit_cache``, First Block Cache, is the transformer's), skip CFG after, distilled CFG (no SD3
model is guidance-distilled), ControlNets but canny and depth (``control_type``), samplers outside the flow
table, latent hires upscalers and embeddings. LoRAs load through StableDiffusion3Pipeline's ``load_lora_weights``. Eta
is accepted and ignored, as A1111 does for samplers whose step takes none (no flow sampler does).
Inpainting blends latents (StableDiffusion3InpaintPipeline); the grid runs one pipeline call per cell.
"""

from __future__ import annotations

from backend.families.base import LATENT_BLENDING, Family

FAMILY = Family(
    name="sd3",
    label="SD 3.x",
    # Single files in the original SAI layout (backend.models.dit_keys names the variant from the shapes).
    model_types={"sd3": False, "sd35_medium": False, "sd35_large": False},
    single_file_pipeline="StableDiffusion3Pipeline",
    default_prediction="flow_prediction",
    supports=frozenset({"dit_cache"}),
    ignores=frozenset({"eta"}),  # no flow sampler takes eta: as SD's Euler in A1111, run without it, not written
    # Canny and depth (presets/models.json); a pose request is refused by its field control_type.
    controlnet_types=frozenset({"canny", "depth"}),
    controlnet_model="SD3ControlNetModel",
    control_image_argument="control_image",
    guess_mode=False,
    controlnet_img2img=False,  # no SD3 ControlNet img2img pipeline; FLUX's takes no negative prompt
    inpaint_strategies=(LATENT_BLENDING,),
    sampler_table="flow",
    prompt_weighting=False,
    pipeline_drops=frozenset({"eta"}),
    img2img_size=True,  # StableDiffusion3Img2ImgPipeline would resize the picture to its default size
    latent_hires=False,
    embeddings=False,  # LoRAs yes; textual inversion has no SD 3.x form in diffusers
)
