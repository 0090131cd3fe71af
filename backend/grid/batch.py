"""The grid's batched denoising: several cells through one UNet call per iteration, each cell as its own run.

What can and cannot be batched. A diffusers pipeline call has one scheduler and one (scalar) CFG scale, so the
stock pipeline can batch only cells that differ in nothing but the seed; in a sampler grid no two cells are like
that. The UNet itself is per-sample: it takes one timestep per sample, and guidance is arithmetic on its outputs.
So cells of the same size batch here: each cell keeps its own scheduler (sampler, schedule, timesteps, multistep
history), its own CPU generator (ancestral noise), its own CFG scale and "skip CFG after" cut-off, exactly as in its
own pipeline call, and only the UNet evaluation runs once for all of them. Cells that share a step count finish
together; a second-order sampler (Heun, DPM2) evaluates about twice per step, and its extra evaluations run in a
smaller batch at the end. Batching changes the UNet's and the VAE's float rounding a little (within 1/255 per
channel on the tiny model), not the noise.

The loop implements the request fields in ``BATCHED_FIELDS`` and nothing else. Prompt encoding is shared by every
cell, batched or not (``backend.grid.prompt``: LoRA tags, embeddings, clip skip), and the UNet and VAE are the
pipeline's own (LoRA weights, the chosen VAE). A cell that uses any other option (DeepCache, the hires fix, or a
txt2img option added later) runs as its own txt2img pipeline call (``backend.grid.runner``), never batched with
that option silently left out: ``unbatched_options`` names them. So do cells of pipelines ``can_batch`` refuses.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from backend.generation import cfg_cutoff, noise
from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import generators
from backend.generation.samplers import build_scheduler
from backend.grid.progress import Progress
from backend.schema.requests import Txt2ImgRequest

# The request fields the loop implements as a txt2img pipeline call does (``save``, ``styles``, ``model`` and the
# prompts are the runner's; ``batch_size`` is 1 in every cell).
BATCHED_FIELDS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        *("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"),
        "steps",
        "guidance_scale",
        "width",
        "height",
        "batch_size",
        "sampler",
        "schedule",
        "model",
        "styles",
        "save",
        "vae",
        "clip_skip",
        "skip_cfg_after",
        "combinatorial_prompts",  # the plan resolved the prompts already
    }
)
# The hires fix's settings, which change nothing while ``enable_hr`` is off (and ``enable_hr`` is not batched).
HIRES_SETTINGS = frozenset({"hr_scale", "hr_upscaler", "hr_steps", "strength", "hr_resize_x", "hr_resize_y"})
_NEUTRAL = Txt2ImgRequest()


def unbatched_options(cell: Txt2ImgRequest) -> list[str]:
    """The fields ``cell`` uses (set off their default) that the loop does not implement; empty: it may batch."""
    skip = BATCHED_FIELDS | HIRES_SETTINGS
    return [
        f.name
        for f in dataclasses.fields(cell)
        if f.name not in skip and getattr(cell, f.name) != getattr(_NEUTRAL, f.name)
    ]


def can_batch(pipe: Any) -> bool:
    """Whether ``denoise_batch`` may run this pipeline's cells together.

    It mirrors ``StableDiffusionPipeline.__call__`` (SD 1.x/2.x) and nothing else: SDXL also conditions the UNet on
    pooled text embeddings and size/crop ids that the loop does not build, a guidance-distilled UNet (LCM,
    ``time_cond_proj_dim``) takes the CFG scale as an embedding, and the loop runs no safety checker. Those run one
    cell per pipeline call, still with the prompt encoded once.
    """
    return (
        type(pipe) is StableDiffusionPipeline
        and pipe.unet.config.time_cond_proj_dim is None
        and getattr(pipe, "safety_checker", None) is None
    )


@dataclass
class _Lane:
    """One cell's own denoising state inside a batch."""

    request: Txt2ImgRequest
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    step_kwargs: dict[str, Any]
    seconds: float = 0.0  # its own setup and scheduler steps, and its share of the batched UNet calls

    @property
    def guided(self) -> bool:
        return self.request.guidance_scale > 1  # the pipeline's do_classifier_free_guidance (no time_cond here)

    def width(self, i: int) -> int:
        """Samples the lane puts into the UNet at iteration ``i``: [uncond, text] while it runs CFG, else [text].

        As a pipeline call with the request's "skip CFG after" (``cfg_cutoff.with_cutoff``) runs it."""
        return 2 if self.guided and i < cfg_cutoff.guided_steps(len(self.timesteps), self.request.skip_cfg_after) else 1


def denoise_batch(
    pipe: Any,
    config: dict[str, Any],
    cells: list[Txt2ImgRequest],
    embeddings: dict[str, torch.Tensor],
    progress: Progress,
    cancel: threading.Event | None,
) -> tuple[list[Image.Image], list[float]]:
    """Cells through ``StableDiffusionPipeline.__call__``'s own steps, with one UNet call per iteration for all.

    Returns the images and each cell's seconds: its own setup and scheduler steps, plus its share (by samples) of
    each batched UNet call it took part in, plus an equal share of the batched VAE decode.
    """
    device = pipe._execution_device
    positive = embeddings["prompt_embeds"].to(device)
    negative = embeddings.get("negative_prompt_embeds")
    negative = negative.to(device) if negative is not None else None
    with torch.no_grad():
        lanes = [_lane(pipe, config, cell, device, positive.dtype) for cell in cells]
        longest = max(len(lane.timesteps) for lane in lanes)
        for i in range(longest):
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation stopped")
            start = time.perf_counter()
            active = [lane for lane in lanes if i < len(lane.timesteps)]
            _iteration(pipe, active, i, positive, negative, device)
            _synchronize(device)
            per_sample = (time.perf_counter() - start) / sum(lane.width(i) for lane in active)
            for lane in active:
                lane.seconds += per_sample * lane.width(i)
            progress.tick(i + 1, longest, active[0].latents)
        start = time.perf_counter()
        latents = torch.cat([lane.latents for lane in lanes])
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * len(lanes))
        pipe.maybe_free_model_hooks()
    decode_share = (time.perf_counter() - start) / len(lanes)
    return images, [lane.seconds + decode_share for lane in lanes]


def _lane(pipe: Any, config: dict[str, Any], cell: Txt2ImgRequest, device: Any, dtype: torch.dtype) -> _Lane:
    """A cell's scheduler, timesteps and first latents, as its pipeline call prepares them."""
    start = time.perf_counter()
    scheduler = build_scheduler(config, cell.sampler, cell.schedule, cell.seed)
    timesteps, _ = retrieve_timesteps(scheduler, cell.steps, device)
    gens = generators(cell.seed, 1)
    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, cell.height // factor, cell.width // factor)
    if noise.active(cell):  # the variation seed's blend, or the seed resized, as the pipeline call makes it
        latents = noise.start_noise(pipe, cell, gens).to(device, dtype) * scheduler.init_noise_sigma
    else:
        latents = randn_tensor(shape, generator=gens, device=device, dtype=dtype) * scheduler.init_noise_sigma
    lane = _Lane(cell, scheduler, timesteps, latents, _step_kwargs(scheduler, gens))
    lane.seconds = time.perf_counter() - start
    return lane


def _iteration(
    pipe: Any, lanes: list[_Lane], i: int, positive: torch.Tensor, negative: torch.Tensor | None, device: Any
) -> None:
    """Iteration ``i`` of every lane: one UNet call for all, then each lane's guidance and scheduler step."""
    samples, times, conditions = [], [], []
    for lane in lanes:
        t = lane.timesteps[i]
        guided = lane.width(i) == 2
        # The pipeline's own order: [uncond, text] per cell when guided, the text alone when not.
        x = torch.cat([lane.latents] * 2) if guided else lane.latents
        samples.append(lane.scheduler.scale_model_input(x, t))
        times.append(t.to(device=device, dtype=torch.float32).expand(len(x)))  # the UNet embeds t as float
        conditions += [negative, positive] if guided else [positive]
    noise = pipe.unet(
        torch.cat(samples), torch.cat(times), encoder_hidden_states=torch.cat(conditions), return_dict=False
    )[0]
    offset = 0
    for lane in lanes:
        width = lane.width(i)
        prediction = noise[offset : offset + width]
        offset += width
        if width == 2:
            uncond, text = prediction.chunk(2)
            prediction = uncond + lane.request.guidance_scale * (text - uncond)
        t = lane.timesteps[i]
        lane.latents = lane.scheduler.step(prediction, t, lane.latents, **lane.step_kwargs, return_dict=False)[0]


def _step_kwargs(scheduler: Any, generator: list[torch.Generator]) -> dict[str, Any]:
    """``prepare_extra_step_kwargs`` of the pipeline, for this cell's scheduler (eta 0, its own generator)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a cell's time is the work it caused, not whatever happened to finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
