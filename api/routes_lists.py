"""Options and lists: A1111's ``options`` (the checkpoint and clip skip later requests use), and what the server
offers: models, samplers, schedulers, styles, upscalers, latent upscale modes, LoRAs and embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.models.upscaler_files import LANCZOS, LATENT_MODES, model_files
from backend.schema.samplers import SAMPLERS, SCHEDULES, supported_schedules

from . import convert
from .models import (
    EmbeddingsResponse,
    LatentModeItem,
    ModelItem,
    SamplerItem,
    SchedulerItem,
    StyleItem,
    UpscalerItem,
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
            "samples_save": settings.save_outputs,
            "samples_format": "png",
            "live_previews_enable": settings.preview_every > 0,
            "show_progress_every_n_steps": settings.preview_every,
        }

    @router.post(f"{SD}/options", responses=ERRORS, tags=["sdapi"])
    def set_options(options: dict[str, Any]):
        """``sd_model_checkpoint`` and ``CLIP_stop_at_last_layers`` change later requests; other known A1111 options
        are accepted and ignored."""
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
        return None


def add_lists(router: APIRouter, state: ApiState) -> None:
    @router.get(f"{SD}/sd-models", response_model=list[ModelItem], tags=["sdapi"])
    def sd_models():
        registry = state.engine.registry
        return [ModelItem(title=name, model_name=name, filename=registry.get(name).source) for name in registry.names]

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
