"""Options and lists: A1111's ``options`` (the checkpoint and clip skip later requests use), and what the server
offers: models, VAEs, samplers, schedulers, styles, upscalers, latent upscale modes, LoRAs and embeddings; and
A1111's lists of what SD Studio does not have (hypernetworks, face restorers, Real-ESRGAN models), which are
empty, and its scripts (the ControlNet and ADetailer extensions' always-on scripts, taken through
``alwayson_scripts``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.models.upscaler_files import LANCZOS, LATENT_MODES, model_files
from backend.schema.errors import ValidationError
from backend.schema.samplers import SAMPLERS, SCHEDULES, supported_schedules

from . import adetailer, convert
from .models import (
    EmbeddingsResponse,
    FaceRestorerItem,
    HypernetworkItem,
    LatentModeItem,
    ModelItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptInfo,
    ScriptsList,
    StyleItem,
    UpscalerItem,
    VaeItem,
)
from .state import ERRORS, SD, ApiState, refusal


def add_options(router: APIRouter, state: ApiState) -> None:
    @router.get(f"{SD}/options", tags=["sdapi"])
    def get_options() -> dict[str, Any]:
        settings = state.engine.settings
        return {
            "sd_model_checkpoint": state.model,
            "sd_checkpoint_hash": None,
            "CLIP_stop_at_last_layers": state.clip_skip,
            "sd_vae": state.vae or "Automatic",
            "samples_save": settings.save_outputs,
            "samples_format": "png",
            "live_previews_enable": settings.preview_every > 0,
            "show_progress_every_n_steps": settings.preview_every,
        }

    @router.post(f"{SD}/options", responses=ERRORS, tags=["sdapi"])
    def set_options(options: dict[str, Any]):
        """``sd_model_checkpoint``, ``CLIP_stop_at_last_layers`` and ``sd_vae`` change later requests; other known
        A1111 options are accepted and ignored."""
        if "sd_model_checkpoint" in options:
            name = options["sd_model_checkpoint"]
            title = name.split(" [")[0] if isinstance(name, str) else name
            names = state.engine.registry.names
            if title not in names:
                return refusal("sd_model_checkpoint", f"unknown model {name!r}; choose one of: {', '.join(names)}")
            state.model = title  # loaded by the next run, under the run lock
        if "CLIP_stop_at_last_layers" in options:
            clip = options["CLIP_stop_at_last_layers"]
            if isinstance(clip, bool) or not isinstance(clip, int) or not 1 <= clip <= 12:
                return refusal("CLIP_stop_at_last_layers", "give a whole number from 1 to 12")
            state.clip_skip = clip
        if "sd_vae" in options:
            try:
                state.vae = state.vae_name(options["sd_vae"])
            except ValidationError as err:
                return refusal("sd_vae", str(err))
        return None


def add_lists(router: APIRouter, state: ApiState) -> None:
    @router.get(f"{SD}/sd-models", response_model=list[ModelItem], tags=["sdapi"])
    def sd_models():
        registry = state.engine.registry
        return [ModelItem(title=name, model_name=name, filename=registry.get(name).source) for name in registry.names]

    @router.get(f"{SD}/sd-vae", response_model=list[VaeItem], tags=["sdapi"])
    def sd_vae():
        """The VAE files in the VAE folders: the page's VAE menu and the Gradio endpoints' ``vae``."""
        return [VaeItem(model_name=name, filename=path.name) for name, path in state.engine.registry.vaes.items()]

    @router.get(f"{SD}/sd-modules", response_model=list[VaeItem], tags=["sdapi"])
    def sd_modules():
        """Modules loaded apart from a checkpoint: here only VAE files (text encoders come with the checkpoint)."""
        return sd_vae()

    @router.get(f"{SD}/samplers", response_model=list[SamplerItem], tags=["sdapi"])
    def samplers():
        return [
            SamplerItem(
                name=name,
                aliases=[],
                options={"schedulers": [convert.scheduler_name(s) for s in supported_schedules(name)]},
            )
            for name in SAMPLERS
        ]

    @router.get(f"{SD}/schedulers", response_model=list[SchedulerItem], tags=["sdapi"])
    def schedulers():
        return [SchedulerItem(name=convert.scheduler_name(label), label=label) for label in SCHEDULES]

    @router.get(f"{SD}/prompt-styles", response_model=list[StyleItem], tags=["sdapi"])
    def prompt_styles():
        styles = state.engine.presets.styles.values()
        return [StyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt) for s in styles]

    @router.get(f"{SD}/upscalers", response_model=list[UpscalerItem], tags=["sdapi"])
    def upscalers():
        files = model_files(state.engine.settings)
        items = [UpscalerItem(name="None"), UpscalerItem(name=LANCZOS)]
        return items + [UpscalerItem(name=name, model_name=name, model_path=path.name) for name, path in files.items()]

    @router.get(f"{SD}/latent-upscale-modes", response_model=list[LatentModeItem], tags=["sdapi"])
    def latent_upscale_modes():
        return [LatentModeItem(name=name) for name in LATENT_MODES]


def add_networks(router: APIRouter, state: ApiState) -> None:
    @router.get(f"{SD}/loras", tags=["sdapi"])
    def loras() -> list[dict[str, Any]]:
        return state.engine.networks.lora_list()

    @router.post(f"{SD}/refresh-loras", tags=["sdapi"])
    def refresh_loras() -> None:
        state.engine.networks.refresh()

    @router.get(f"{SD}/embeddings", response_model=EmbeddingsResponse, tags=["sdapi"])
    def embeddings():
        return EmbeddingsResponse(loaded=state.engine.networks.embedding_list())


# The extensions' always-on scripts, as A1111 lists them (their titles, lower-cased: "ControlNet", "ADetailer");
# their arguments go in alwayson_scripts, where the names are matched without case.
CONTROLNET_SCRIPT = "controlnet"
ALWAYSON_SCRIPTS = [CONTROLNET_SCRIPT, adetailer.SCRIPT_NAME]


def add_absent(router: APIRouter, state: ApiState) -> None:
    """What A1111 lists and SD Studio has none of: empty lists, never errors; and its scripts."""

    @router.get(f"{SD}/hypernetworks", response_model=list[HypernetworkItem], tags=["sdapi"])
    def hypernetworks():
        return []

    @router.get(f"{SD}/face-restorers", response_model=list[FaceRestorerItem], tags=["sdapi"])
    def face_restorers():
        return []

    @router.get(f"{SD}/realesrgan-models", response_model=list[RealesrganItem], tags=["sdapi"])
    def realesrgan_models():
        """Empty: A1111's built-in Real-ESRGAN models; upscaler model files are in ``upscalers``."""
        return []

    @router.get(f"{SD}/scripts", response_model=ScriptsList, tags=["sdapi"])
    def scripts():
        """No selectable scripts; the always-on ControlNet and ADetailer scripts on both."""
        return ScriptsList(txt2img=ALWAYSON_SCRIPTS, img2img=ALWAYSON_SCRIPTS)

    @router.get(f"{SD}/script-info", response_model=list[ScriptInfo], tags=["sdapi"])
    def script_info():
        return [
            ScriptInfo(name=name, is_alwayson=True, is_img2img=img2img)
            for name in ALWAYSON_SCRIPTS
            for img2img in (False, True)
        ]
