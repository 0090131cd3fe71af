"""Chroma (lodestones' Chroma1-HD, Chroma1-Base and their fine-tunes): an 8.9B FLUX.1-schnell derivative. FLUX's
double and single transformer blocks with their modulation computed by a small "approximator" network, one T5
text encoder (no CLIP), FLUX's 16-channel VAE and 2×2-packed latents, 1024² pictures.

It is de-distilled: the request's CFG scale is real CFG (the pipeline's ``guidance_scale``) and a negative prompt
acts whenever CFG is above 1, as on SD; there is no distilled guidance. Refused by field name: clip skip, DeepCache,
the DiT block cache, skip CFG after, distilled CFG, ControlNet (``control_type``: diffusers has no Chroma ControlNet
pipeline), samplers outside its table (Euler and UniPC: ChromaPipeline forces its sigmas on the scheduler), latent
hires upscalers (packed latents) and embeddings. LoRAs load through its pipelines' ``load_lora_weights`` (diffusers'
FLUX loader, FluxLoraLoaderMixin) into the transformer. Eta is accepted and ignored, as on FLUX. diffusers'
AutoPipeline has no Chroma img2img or inpaint entry, so those pipelines are named here; inpainting blends latents.
Single files (Chroma1-HD.safetensors, chroma-unlocked-v*, fp8, GGUF) are FLUX's layout with the approximator
(``backend.models.dit_keys``), paired with a T5 file and FLUX's VAE (``backend.models.dit_files``).
"""

from __future__ import annotations

from backend.families.base import LATENT_BLENDING, Family

FAMILY = Family(
    name="chroma",
    label="Chroma",
    # Single files in the original layout (backend.models.dit_keys: FLUX's blocks with distilled_guidance_layer).
    model_types={"chroma": False},
    single_file_pipeline="ChromaPipeline",
    default_prediction="flow_prediction",
    supports=frozenset(),
    ignores=frozenset({"eta"}),  # no flow sampler takes eta: as SD's Euler in A1111, run without it, not written
    controlnet_types=frozenset(),  # a ControlNet request is refused by its field control_type
    inpaint_strategies=(LATENT_BLENDING,),
    sampler_table="flow_given_sigmas",  # Euler and UniPC: its pipelines force their sigmas on the scheduler
    prompt_weighting=False,
    pipeline_drops=frozenset({"eta"}),
    img2img_size=True,  # ChromaImg2ImgPipeline would resize the picture to its default size
    task_pipelines={"img2img": "ChromaImg2ImgPipeline", "inpaint": "ChromaInpaintPipeline"},
    transformer_config={"guidance_embeds": False},  # de-distilled: no guidance embedding
    packed_latents=True,
    latent_hires=False,
    embeddings=False,  # LoRAs yes; textual inversion has no Chroma (T5-only) form in diffusers
)
