"""One pipeline call as every run makes it, and the step events a run reports.

A fresh scheduler per call (schedulers are stateful), one CPU generator per image (the same picture on any device
and batch size), the step callback that reports progress and stops on Stop, and the opt-in step savings (DeepCache,
skip CFG) around the call. The engine's runs and the grid's per-cell runs both come through here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from backend.families import family
from backend.generation import cfg_cutoff, noise, step_cache
from backend.generation.interrupt import Cancelled
from backend.generation.prompting import clip_skip_for, clip_skipped, prompt_embeddings
from backend.generation.samplers import build_scheduler
from backend.models import zerogpu
from backend.models.pipelines import LoadedModel
from backend.schema.requests import GenerationRequest
from backend.schema.seeds import batch_seeds


@dataclass(frozen=True)
class StepEvent:
    step: int  # 1-based count of finished denoising steps
    total: int
    preview: Image.Image | None


StepCallback = Callable[[StepEvent], None]


def generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image (seed, seed+1, …): the same image on any device and batch size."""
    return [torch.Generator("cpu").manual_seed(s) for s in batch_seeds(seed, count)]


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """torch's global RNG seeded with ``seed`` for one call, its state restored after: a pipeline that draws from it
    (SD3's ControlNet pipeline samples the control map's VAE latents so) gives the same picture for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


PipelineCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


def step_callback(cancel: threading.Event | None, report: Callable[[int, int, torch.Tensor], None]) -> PipelineCallback:
    """A diffusers ``callback_on_step_end`` that stops on ``cancel`` and reports (steps done, total, latents)."""

    def callback(pipe, step: int, timestep, tensors: dict[str, Any]) -> dict[str, Any]:
        if cancel is not None and cancel.is_set():
            raise Cancelled("generation stopped")
        report(step + 1, pipe.num_timesteps, tensors["latents"])
        return tensors

    return callback


def call_pipeline(
    pipe: Any, loaded: LoadedModel, request: GenerationRequest, kwargs: dict[str, Any], callback
) -> list[Image.Image]:
    """One pipeline call as every run makes it: a fresh scheduler, one CPU generator per image, the step callback.

    ``loaded``: the model, whose scheduler config the fresh scheduler starts from, and whose family says its sampler
    table, whether prompts go through compel, and how its pipelines take the arguments (``Family.pipeline_kwargs``).

    On a ZeroGPU Space the call runs on a GPU lent for its estimated duration (``backend.models.zerogpu``).
    """

    def run() -> list[Image.Image]:
        # Schedulers are stateful: every run gets a fresh one from the model's own config.
        model_family = family(loaded.spec.family)
        table, config = model_family.sampler_table, loaded.scheduler_config
        pipe.scheduler = build_scheduler(config, request.sampler, request.schedule, request.seed, table)
        with step_cache.cached_steps(pipe, request.deep_cache) as cache, step_cache.dit_cached(pipe, request.dit_cache):
            tensor_inputs = ["latents"]
            step_end = callback
            if cfg_cutoff.active(request.skip_cfg_after, request.guidance_scale):
                tensor_inputs += cfg_cutoff.tensor_inputs(pipe)
                # The batch halves at the cut-off: the step cache must not hand back the old batch's features.
                step_end = cfg_cutoff.with_cutoff(callback, request.skip_cfg_after, lambda: step_cache.refresh(cache))
            call_kwargs = kwargs
            with clip_skipped(pipe.text_encoder, clip_skip_for(pipe, request.clip_skip)):
                # Text, not embeddings the caller made (the grid); A1111 weights where the family's encoders take them.
                if "prompt" in call_kwargs and model_family.prompt_weighting:
                    embeddings = prompt_embeddings(pipe, call_kwargs["prompt"], call_kwargs["negative_prompt"] or "")
                    if embeddings is not None:
                        call_kwargs = {k: v for k, v in call_kwargs.items() if k not in ("prompt", "negative_prompt")}
                        call_kwargs.update(embeddings)
                call_kwargs = model_family.pipeline_kwargs(request, call_kwargs)
                gens = generators(request.seed, request.batch_size)
                variation = nullcontext()
                if noise.active(request) and "strength" not in kwargs:  # from noise
                    call_kwargs["latents"] = noise.start_noise(pipe, request, gens, model_family.packed_latents)
                elif noise.active(request) and request.task != "txt2img":  # from a picture (not a hires pass)
                    variation = noise.picture_draws(pipe, request, model_family.packed_latents)
                with variation, seeded_global_rng(request.seed):
                    output = pipe(
                        **call_kwargs,
                        generator=gens,
                        callback_on_step_end=step_end,
                        callback_on_step_end_tensor_inputs=tensor_inputs,
                    )
        return list(output.images)

    seconds = zerogpu.duration_for(request.steps, request.width, request.height, request.batch_size)
    return zerogpu.on_gpu(pipe, run, seconds)
