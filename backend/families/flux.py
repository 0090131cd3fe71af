"""FLUX.1 (dev, schnell and their fine-tunes): a rectified-flow transformer, CLIP-L and T5 text encoders, a
16-channel VAE whose latents the pipeline packs as 2×2 patches per token, 1024² pictures.

dev is guidance-distilled: its "Distilled CFG" (``distilled_cfg_scale``, default 3.5) is the pipeline's
``guidance_scale``, and the request's CFG scale is FLUX's true CFG (``true_cfg_scale``; 1 = off, so a negative
prompt acts only above 1). schnell ignores the distilled number (its transformer has no guidance embedding).

Refused by field name: clip skip, DeepCache (a UNet cache; ``dit_cache``, First Block Cache, is the transformer's),
skip CFG after, ControlNets but canny and depth (``control_type``), samplers outside its flow table, latent hires
upscalers (packed latents) and embeddings. LoRAs load through FluxPipeline's ``load_lora_weights`` (diffusers
converts Kohya, XLabs and BFL keys). Eta is
accepted and ignored, as A1111 does for every sampler whose step takes none (no flow sampler does; A1111 clients
send eta by default). Inpainting blends latents (FluxInpaintPipeline), or, where the transformer is a FLUX.1 Fill
one (``backend.models.flux_fill``), runs FluxFillPipeline, which sees the mask and the masked picture; a Fill model
runs the inpaint tab only. The grid runs one pipeline call per cell.
"""

from __future__ import annotations

from backend.families.base import LATENT_BLENDING, Family

FILL_MODEL = "Fill model"  # the inpaint strategy of a FLUX.1 Fill transformer (chosen by the model, as SD's UNet)

FAMILY = Family(
    name="flux",
    label="FLUX",
    # Single files in the original BFL layout (backend.models.dit_keys names the variant; schnell has no guidance).
    # Fill files are inpainting models too, but with no 9-channel UNet: their transformer says it (flux_fill).
    model_types={"flux-dev": False, "flux-schnell": False, "flux-fill": False},
    single_file_pipeline="FluxPipeline",
    default_prediction="flow_prediction",
    supports=frozenset({"distilled_cfg_scale", "dit_cache"}),
    ignores=frozenset({"eta"}),  # no flow sampler takes eta: as SD's Euler in A1111, run without it, not written
    # Canny and depth (presets/models.json); a pose request is refused by its field control_type.
    controlnet_types=frozenset({"canny", "depth"}),
    controlnet_model="FluxControlNetModel",
    control_image_argument="control_image",
    guess_mode=False,
    controlnet_img2img=False,  # no SD3 ControlNet img2img pipeline; FLUX's takes no negative prompt
    inpaint_strategies=(FILL_MODEL, LATENT_BLENDING),
    task_pipelines={"fill": "FluxFillPipeline"},  # a Fill transformer's inpaint pipeline (flux_fill.FILL_TASK)
    sampler_table="flow_sigmas",  # FluxPipeline hands the scheduler its sigmas: no FlowMatch Heun
    prompt_weighting=False,
    pipeline_drops=frozenset({"eta"}),
    img2img_size=True,
    true_cfg=True,
    packed_latents=True,
    latent_hires=False,
    embeddings=False,  # LoRAs yes; textual inversion has no FLUX form in diffusers
)
