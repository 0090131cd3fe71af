"""Sampler comparison grid (X/Y plot): samplers × step counts, or samplers × CFG scales.

One prompt, negative prompt, styles, seed, size and model for every cell. Each cell is a txt2img request checked
by ``backend.requests.validate``, and the whole grid is checked before any work starts. The prompt is encoded once
for the whole grid, and cells that share a step count are denoised as one batch (see ``_denoise_batch``).
"""

from __future__ import annotations

import inspect
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageDraw, ImageFont

from . import cfg_cutoff, zerogpu
from .devices import check_cost
from .engine import MAX_SEED, Cancelled, Engine, StepCallback, StepEvent, call_pipeline, generators, step_callback
from .infotext import format_infotext
from .interrupt import stoppable
from .outputs import PARAMETERS_KEY
from .preview import latents_to_rgb
from .prompting import clip_skip_for, clip_skipped, prompt_embeddings
from .requests import Txt2ImgRequest, ValidationError, validate
from .samplers import DEFAULT_SCHEDULE, SAMPLERS, SCHEDULES, build_scheduler, split_legacy_name, supported_schedules
from .tasks import prepare

X_TITLE = "Sampler"
Y_AXES = {  # Y axis field of GridRequest → (request field it sets, axis title)
    "steps_list": ("steps", "Steps"),
    "cfg_list": ("guidance_scale", "CFG scale"),
}
# Keyword arguments ``pipe.encode_prompt`` returns, in its order (SD returns the first two, SDXL all four).
EMBEDDING_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


@dataclass
class GridRequest:
    """A whole grid. The X axis is ``samplers``; the Y axis is ``steps_list`` or ``cfg_list`` (exactly one).

    The setting that is not an axis (``steps`` or ``guidance_scale``) is the same in every cell. A ``samplers``
    entry is a sampler name, which takes ``schedule`` where that sampler supports it and Automatic otherwise (as
    the txt2img sampler menu does), or A1111's combined form naming its own schedule, e.g. ``DPM++ 2M Karras``.
    Axis values may be numbers or their text ("20"); they are validated like the txt2img fields.
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1  # one seed for every cell; -1 = one random seed for the grid
    steps: int = 20
    guidance_scale: float = 7.0
    width: int = 512
    height: int = 512
    schedule: str = DEFAULT_SCHEDULE
    model: str = ""
    styles: tuple[str, ...] = ()
    vae: str = ""  # "" = the model's own
    skip_cfg_after: float = 1.0  # as in Txt2ImgRequest: the fraction of each cell's steps that runs CFG
    deep_cache: int = 1  # as in Txt2ImgRequest: full UNet every Nth step of each cell
    samplers: list[str] = field(default_factory=list)
    steps_list: list[Any] = field(default_factory=list)
    cfg_list: list[Any] = field(default_factory=list)


@dataclass
class GridPlan:
    """A validated grid: every cell's request (styles applied, seed and model resolved), row by row."""

    y_axis: str  # "steps_list" or "cfg_list"
    x_labels: list[str]
    y_labels: list[str]
    y_values: list[str]  # as written in the infotext
    cells: list[Txt2ImgRequest]  # row-major: cells[row * columns + column]

    @property
    def columns(self) -> int:
        return len(self.x_labels)

    @property
    def y_title(self) -> str:
        return Y_AXES[self.y_axis][1]

    @property
    def seed(self) -> int:
        return self.cells[0].seed

    @property
    def model(self) -> str:
        return self.cells[0].model


@dataclass
class GridResult:
    grid: Image.Image  # the labelled grid, its infotext in ``info``
    infotext: str  # the grid's: the first cell's parameters plus both axes
    images: list[Image.Image]  # row-major, each with its own infotext in ``info``
    infotexts: list[str]
    labels: list[str]  # "<sampler> · <steps or CFG> · <seconds> s", row-major
    seconds: list[float]  # each cell's wall time (its share of the batches it ran in)
    boxes: list[tuple[int, int]]  # each cell's top-left corner in ``grid``
    plan: GridPlan
    batched: bool  # whether cells ran in batches (else one pipeline call per cell)
    paths: list[Path] = field(default_factory=list)  # saved cells, when outputs are saved
    grid_path: Path | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. cells that could not be saved

    @property
    def seed(self) -> int:
        return self.plan.seed


@dataclass(frozen=True)
class GridStep(StepEvent):
    """Progress over the whole grid: ``step``/``total`` count denoising iterations of the whole grid."""

    cell: int  # 1-based index of the first cell running
    running: int  # cells running together (a batch)
    cells: int
    cell_step: int
    cell_steps: int
    finished: tuple[Image.Image, ...] = ()  # the cells done so far, in the order they finished

    @property
    def desc(self) -> str:
        which = f"Cell {self.cell}" if self.running == 1 else f"Cells {self.cell}–{self.cell + self.running - 1}"
        return f"{which} of {self.cells}, step {self.cell_step} of {self.cell_steps}"


def split_list(value: str | Sequence[Any] | None) -> list[Any]:
    """Axis values from text: "10, 20, 30", "10 20 30" or "[10, 20, 30]"; a list is returned as it is."""
    if value is None:
        return []
    if not isinstance(value, str):
        return list(value)
    return [part for part in re.split(r"[,;\s]+", value.strip().strip("[]")) if part]


def sampler_label(sampler: str, schedule: str) -> str:
    """A1111's combined name ("DPM++ 2M Karras"), which ``split_legacy_name`` reads back."""
    return sampler if schedule == "Automatic" else f"{sampler} {schedule}"


def sampler_choices() -> list[str]:
    """Every sampler, then every sampler with each schedule type it supports (for a multi-select menu)."""
    combined = [sampler_label(s, sch) for s in SAMPLERS for sch in supported_schedules(s) if sch != "Automatic"]
    return list(SAMPLERS) + combined


def resolve_sampler(entry: str, schedule: str) -> tuple[str, str]:
    """A ``samplers`` entry → (sampler, schedule); an explicit unsupported pair is left for ``validate``."""
    name = str(entry).strip()
    if name in SAMPLERS:
        return name, schedule if schedule in supported_schedules(name) else "Automatic"
    try:
        return split_legacy_name(name)
    except KeyError:
        raise ValidationError(
            "samplers",
            f"unknown sampler {entry!r}; choose one of: {', '.join(SAMPLERS)} "
            "(a schedule type may follow the name, e.g. 'DPM++ 2M Karras')",
        ) from None


def plan_grid(request: GridRequest, engine: Engine) -> GridPlan:
    """Validate the whole grid, every axis entry and every cell, or raise ``ValidationError`` naming the field."""
    settings = engine.settings
    if request.schedule not in SCHEDULES:
        raise ValidationError(
            "schedule", f"unknown schedule type {request.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
        )
    entries = request.samplers.split(",") if isinstance(request.samplers, str) else list(request.samplers or [])
    pairs = [resolve_sampler(entry, request.schedule) for entry in entries if str(entry).strip()]
    if not pairs:
        raise ValidationError("samplers", "pick at least one sampler")
    x_labels = [sampler_label(*pair) for pair in pairs]
    _no_repeats("samplers", x_labels)
    steps_values, cfg_values = split_list(request.steps_list), split_list(request.cfg_list)
    if bool(steps_values) == bool(cfg_values):
        which = "not both" if steps_values else "one of them"
        raise ValidationError("steps_list", f"give step counts (steps_list) or CFG scales (cfg_list), {which}")
    y_axis = "steps_list" if steps_values else "cfg_list"
    y_field = Y_AXES[y_axis][0]
    values = steps_values or cfg_values
    count = len(pairs) * len(values)
    if count > settings.grid_max_cells:
        raise ValidationError(
            "grid",
            f"{len(pairs)} samplers × {len(values)} values = {count} cells; the limit is {settings.grid_max_cells} "
            "(SDSTUDIO_GRID_MAX_CELLS)",
        )
    # Which request field's error belongs to which grid field.
    renamed = {y_field: y_axis, "sampler": "samplers", "schedule": "samplers"}
    base = Txt2ImgRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        steps=request.steps,
        guidance_scale=request.guidance_scale,
        width=request.width,
        height=request.height,
        batch_size=1,
        model=request.model,
        styles=tuple(request.styles or ()),
        vae=request.vae,
        skip_cfg_after=request.skip_cfg_after,
        deep_cache=request.deep_cache,
    )
    cells = []
    for value in values:
        for sampler, schedule in pairs:
            cell = base.replace(sampler=sampler, schedule=schedule, **{y_field: value})
            try:
                cells.append(validate(cell, settings, engine.registry.names))
            except ValidationError as err:
                raise ValidationError(renamed.get(err.field, err.field), str(err)) from None
    pixel_steps = sum(cell.width * cell.height * cell.steps for cell in cells)
    check_cost(
        pixel_steps,
        settings,
        f"{len(cells)} cells of {base.width}×{base.height}, {pixel_steps // (base.width * base.height)} steps in all",
    )
    columns = len(pairs)
    y_numbers = [getattr(cells[row * columns], y_field) for row in range(len(values))]
    y_values = [f"{number:g}" for number in y_numbers]
    _no_repeats(y_axis, y_values)
    y_labels = [f"{v} steps" if y_field == "steps" else f"CFG {v}" for v in y_values]
    # Styles, seed and model once for the grid; styles can still fail (an unknown name) before any work.
    seed = cells[0].seed if cells[0].seed != -1 else random.randint(0, MAX_SEED)
    model = cells[0].model or engine.default_model
    cells = [engine.apply_styles(cell).replace(seed=seed, model=model) for cell in cells]
    return GridPlan(y_axis, x_labels, y_labels, y_values, cells)


def _no_repeats(field_name: str, labels: list[str]) -> None:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValidationError(field_name, f"{label} is listed twice")
        seen.add(label)


def grid_infotext(plan: GridPlan, extra: dict[str, str] | None = None) -> str:
    """The first cell's parameters (as A1111 writes for a grid, LoRA hashes included) plus both axes."""
    axes = {
        "X Type": X_TITLE,
        "X Values": ", ".join(plan.x_labels),
        "Y Type": plan.y_title,
        "Y Values": ", ".join(plan.y_values),
    }
    return format_infotext(plan.cells[0], plan.seed, {**(extra or {}), **axes})


def can_batch(pipe: Any) -> bool:
    """Whether ``_denoise_batch`` may run this pipeline's cells together.

    It mirrors ``StableDiffusionPipeline.__call__`` (SD 1.x/2.x) and nothing else: SDXL also conditions the UNet on
    pooled text embeddings and size/crop ids that the loop does not build, and a guidance-distilled UNet (LCM,
    ``time_cond_proj_dim``) takes the CFG scale as an embedding. Those run one cell per pipeline call, still with
    the prompt encoded once.
    """
    return type(pipe) is StableDiffusionPipeline and pipe.unet.config.time_cond_proj_dim is None


def encode_prompt(
    pipe: Any, prompt: str, negative_prompt: str, guided: bool, clip_skip: int = 1
) -> dict[str, torch.Tensor]:
    """The prompt encoding, done once: the keyword arguments the pipeline's ``__call__`` takes instead of text.

    ``guided``: whether any cell uses classifier-free guidance (CFG > 1), so the negative prompt is needed.
    A1111 weights, BREAK and long prompts go through ``backend.prompting`` as in ``Engine.run``.
    """
    with torch.no_grad(), clip_skipped(pipe.text_encoder, clip_skip_for(pipe, clip_skip)):
        embeddings = prompt_embeddings(pipe, prompt, negative_prompt)
        if embeddings is not None:
            if not guided:  # SDXL's negative pooled embedding too
                embeddings = {k: v for k, v in embeddings.items() if not k.startswith("negative_")}
            return embeddings
        encoded = pipe.encode_prompt(
            prompt=prompt,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt or None,  # as tasks.prepare passes it
        )
    return {name: value for name, value in zip(EMBEDDING_NAMES, encoded, strict=False) if value is not None}


class GridRunner:
    """Runs grids on an engine's cached pipelines, under the engine's one-run-at-a-time lock.

    ``run`` has ``Engine.run``'s signature, so the UI streams a grid like any generation. ``batch=False`` makes
    one pipeline call per cell (what pipelines ``can_batch`` refuses always get); the benchmark compares both.
    """

    def __init__(self, engine: Engine, batch: bool = True):
        self.engine = engine
        self.batch = batch

    def run(
        self,
        request: GridRequest,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GridResult:
        engine = self.engine
        plan = plan_grid(request, engine)
        engine.networks.check(plan.cells[0].prompt, plan.cells[0].negative_prompt)
        # The whole grid holds the engine's lock, loading included: see Engine.run.
        with engine.run_lock:
            return self._run_locked(plan, on_step, cancel)

    def _run_locked(self, plan: GridPlan, on_step: StepCallback | None, cancel: threading.Event | None) -> GridResult:
        engine = self.engine
        loaded = engine.load_for(plan.model, "txt2img")
        engine.use_vae(plan.model, plan.cells[0].vae)
        pipe = engine.cache.pipeline(plan.model, "txt2img")
        batched = self.batch and can_batch(pipe)
        chunks = _chunks(plan.cells, engine.settings.max_batch if batched else 1)
        config = loaded.scheduler_config
        lengths = [_iterations(config, cell) for cell in plan.cells]  # also the last check before any work
        progress = _Progress(
            on_step,
            total=sum(max(lengths[k] for k in chunk) for chunk in chunks),
            cells=len(plan.cells),
            every=engine.settings.preview_every,
            factors=loaded.spec.latent_rgb_factors,
            size=(plan.cells[0].width, plan.cells[0].height),
        )
        images: dict[int, Image.Image] = {}
        seconds = [0.0] * len(plan.cells)
        guided = any(cell.guidance_scale > 1 for cell in plan.cells)
        # As Engine.run; before the clock starts, so loading a LoRA is not counted as the cells' encoding time.
        networks = engine.networks.apply(pipe, plan.cells[0].prompt, plan.cells[0].negative_prompt)
        start = time.perf_counter()
        embeddings = encode_prompt(pipe, networks.prompt, networks.negative_prompt, guided, plan.cells[0].clip_skip)
        encode_share = (time.perf_counter() - start) / len(plan.cells)
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation stopped")
            progress.start(chunk[0] + 1, len(chunk))
            requests = [plan.cells[k] for k in chunk]
            if batched:
                steps = max(cell.steps for cell in requests)
                seconds_asked = zerogpu.duration_for(steps, requests[0].width, requests[0].height, len(requests))
                done, spent = zerogpu.on_gpu(
                    pipe,
                    lambda: _denoise_batch(pipe, config, requests, embeddings, progress, cancel),  # noqa: B023
                    seconds_asked,
                )
            else:
                done, spent = _run_cell(pipe, config, requests[0], embeddings, progress, cancel)
            for k, image, cell_seconds in zip(chunk, done, spent, strict=True):
                images[k], seconds[k] = image, cell_seconds + encode_share
            progress.finished.extend(done)  # shown while the next cells run
        cells = [images[k] for k in range(len(plan.cells))]
        return self._finish(plan, cells, seconds, batched, networks.infotext)

    def _finish(
        self, plan: GridPlan, images: list[Image.Image], seconds: list[float], batched: bool, extra: dict[str, str]
    ) -> GridResult:
        """Labels, infotexts, the grid image; everything is saved only now, so a stopped grid saves nothing."""
        columns = plan.columns
        labels = [
            f"{plan.x_labels[k % columns]} · {plan.y_labels[k // columns]} · {s:.2f} s" for k, s in enumerate(seconds)
        ]
        infotexts = [format_infotext(cell, cell.seed, extra) for cell in plan.cells]
        for image, text in zip(images, infotexts, strict=True):
            image.info[PARAMETERS_KEY] = text  # kept by any PNG written from it (the UI's gallery too)
        captions = [f"{s:.2f} s" for s in seconds]
        grid, boxes = draw_grid(images, plan.x_labels, plan.y_labels, X_TITLE, plan.y_title, captions)
        text = grid_infotext(plan, extra)
        grid.info[PARAMETERS_KEY] = text
        result = GridResult(grid, text, images, infotexts, labels, seconds, boxes, plan, batched)
        result.paths, cell_warnings = self.engine.save(images, infotexts, [plan.seed] * len(images))
        grid_paths, grid_warnings = self.engine.save([grid], [text], [plan.seed])
        result.grid_path = grid_paths[0] if grid_paths else None
        result.warnings = cell_warnings + grid_warnings
        return result


def _chunks(cells: list[Txt2ImgRequest], size: int) -> list[list[int]]:
    """Cell indices grouped by step count (in grid order), each group cut into batches of at most ``size``.

    ``size`` is the txt2img batch limit: a batch of cells needs the memory of a txt2img batch that large.
    """
    groups: dict[int, list[int]] = {}
    for k, cell in enumerate(cells):
        groups.setdefault(cell.steps, []).append(k)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _iterations(config: dict[str, Any], cell: Txt2ImgRequest) -> int:
    """UNet evaluations the cell's sampler makes (Heun and DPM2 make about two per step)."""
    scheduler = build_scheduler(config, cell.sampler, cell.schedule)
    try:
        scheduler.set_timesteps(cell.steps, device="cpu")
    except ValueError as err:  # e.g. LCM runs at most the 50 steps it was distilled from
        label = sampler_label(cell.sampler, cell.schedule)
        raise ValidationError("samplers", f"{label} cannot run {cell.steps} steps: {err}") from None
    return len(scheduler.timesteps)


class _Progress:
    """Turns per-iteration ticks into ``GridStep`` events counted over the whole grid."""

    def __init__(self, on_step: StepCallback | None, total: int, cells: int, every: int, factors, size):
        self.on_step, self.total, self.cells = on_step, total, cells
        self.every, self.factors, self.size = every, factors, size
        self.done = 0
        self.cell, self.running = 1, 1
        self.finished: list[Image.Image] = []

    def start(self, cell: int, running: int) -> None:
        self.cell, self.running = cell, running

    def tick(self, step: int, steps: int, latents: torch.Tensor) -> None:
        self.done += 1
        if self.on_step is None:
            return
        preview = None
        if self.every and step % self.every == 0:
            preview = latents_to_rgb(latents, self.factors, self.size)
        self.on_step(
            GridStep(
                self.done, self.total, preview, self.cell, self.running, self.cells, step, steps, tuple(self.finished)
            )
        )


def _run_cell(pipe, config, cell: Txt2ImgRequest, embeddings, progress: _Progress, cancel):
    """One cell, one pipeline call, as ``Engine.run`` makes it but with the grid's prompt embeddings."""
    start = time.perf_counter()
    kwargs = prepare(cell).kwargs
    del kwargs["prompt"], kwargs["negative_prompt"]
    with stoppable(pipe, cancel):
        images = call_pipeline(pipe, config, cell, {**kwargs, **embeddings}, step_callback(cancel, progress.tick))
    return images, [time.perf_counter() - start]


@dataclass
class _Lane:
    """One cell's own denoising state inside a batch."""

    request: Txt2ImgRequest
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    step_kwargs: dict[str, Any]

    @property
    def guided(self) -> bool:
        return self.request.guidance_scale > 1  # the pipeline's do_classifier_free_guidance (no time_cond here)

    def guided_at(self, i: int) -> bool:
        """Whether iteration ``i`` runs CFG: as in a pipeline call with the request's "skip CFG after"."""
        return self.guided and i < cfg_cutoff.guided_steps(len(self.timesteps), self.request.skip_cfg_after)


# What can and cannot be batched. A diffusers pipeline call has one scheduler and one (scalar) CFG scale, so the
# stock pipeline can batch only cells that differ in nothing but the seed; in a sampler grid no two cells are
# like that. The UNet itself is per-sample: it takes one timestep per sample, and guidance is arithmetic on its
# outputs. So cells of the same size batch here: each cell keeps its own scheduler (sampler, schedule, timesteps,
# multistep history), its own CPU generator (ancestral noise) and its own CFG scale, exactly as in its own
# pipeline call, and only the UNet evaluation runs once for all of them. Cells that share a step count finish
# together; a second-order sampler (Heun, DPM2) evaluates about twice per step, and its extra evaluations run in
# a smaller batch at the end. What does not batch: pipelines ``can_batch`` refuses (see there), cells of
# different sizes (a grid has one size), and more cells than ``max_batch`` (memory; the next batch runs after).
# Batching changes the UNet's float rounding a little (within 1/255 per channel on the tiny model), not the noise.
def _denoise_batch(pipe, config, cells: list[Txt2ImgRequest], embeddings, progress: _Progress, cancel):
    """Cells through ``StableDiffusionPipeline.__call__``'s own steps, with one UNet call per iteration for all.

    Returns the images and each cell's seconds: its own setup and scheduler steps, plus its share (by samples) of
    each batched UNet call it took part in, plus an equal share of the batched VAE decode.
    """
    device = pipe._execution_device
    positive = embeddings["prompt_embeds"].to(device)
    negative = embeddings.get("negative_prompt_embeds")
    negative = negative.to(device) if negative is not None else None
    seconds = [0.0] * len(cells)
    lanes: list[_Lane] = []
    with torch.no_grad():
        for k, cell in enumerate(cells):
            start = time.perf_counter()
            scheduler = build_scheduler(config, cell.sampler, cell.schedule)
            timesteps, _ = retrieve_timesteps(scheduler, cell.steps, device)
            gens = generators(cell.seed, 1)
            factor = pipe.vae_scale_factor
            shape = (1, pipe.unet.config.in_channels, cell.height // factor, cell.width // factor)
            latents = randn_tensor(shape, generator=gens, device=device, dtype=positive.dtype)
            latents = latents * scheduler.init_noise_sigma
            lanes.append(_Lane(cell, scheduler, timesteps, latents, _step_kwargs(scheduler, gens)))
            seconds[k] += time.perf_counter() - start
        longest = max(len(lane.timesteps) for lane in lanes)
        for i in range(longest):
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation stopped")
            start = time.perf_counter()
            active = [k for k, lane in enumerate(lanes) if i < len(lane.timesteps)]
            samples, times, conditions = [], [], []
            for k in active:
                lane = lanes[k]
                t = lane.timesteps[i]
                # The pipeline's own order: [uncond, text] per cell when guided, the text alone when not.
                x = torch.cat([lane.latents] * 2) if lane.guided_at(i) else lane.latents
                samples.append(lane.scheduler.scale_model_input(x, t))
                times.append(t.to(device=device, dtype=torch.float32).expand(len(x)))  # the UNet embeds t as float
                conditions += [negative, positive] if lane.guided_at(i) else [positive]
            noise = pipe.unet(
                torch.cat(samples), torch.cat(times), encoder_hidden_states=torch.cat(conditions), return_dict=False
            )[0]
            offset = 0
            for k in active:
                lane = lanes[k]
                width = 2 if lane.guided_at(i) else 1
                prediction = noise[offset : offset + width]
                offset += width
                if lane.guided_at(i):
                    uncond, text = prediction.chunk(2)
                    prediction = uncond + lane.request.guidance_scale * (text - uncond)
                t = lane.timesteps[i]
                stepped = lane.scheduler.step(prediction, t, lane.latents, **lane.step_kwargs, return_dict=False)
                lane.latents = stepped[0]
            _synchronize(device)
            per_sample = (time.perf_counter() - start) / offset
            for k in active:
                seconds[k] += per_sample * (2 if lanes[k].guided_at(i) else 1)
            first = lanes[active[0]]
            progress.tick(i + 1, longest, first.latents)
        start = time.perf_counter()
        latents = torch.cat([lane.latents for lane in lanes])
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * len(lanes))
        pipe.maybe_free_model_hooks()
    decode_share = (time.perf_counter() - start) / len(lanes)
    return images, [s + decode_share for s in seconds]


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


# --- drawing -------------------------------------------------------------------------------------------------


def draw_grid(
    images: list[Image.Image],
    x_labels: list[str],
    y_labels: list[str],
    x_title: str,
    y_title: str,
    captions: list[str],
) -> tuple[Image.Image, list[tuple[int, int]]]:
    """A white sheet: the X title over column headers, row headers on the left (the Y title above them), and
    each cell with its caption under it. Text scales with the cell size so it reads at a glance.

    Returns the sheet and each cell's top-left corner, row-major.
    """
    columns, rows = len(x_labels), len(y_labels)
    cell_w, cell_h = images[0].size
    size = max(14, min(cell_w, cell_h) // 16)
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    pad, line = size // 2, round(size * 1.3)
    words = [word for label in x_labels for word in label.split()]
    column_w = max([cell_w] + [int(measure(w, font=font)) + 2 * pad for w in words + captions])
    header = [_wrap(label, font, column_w - pad, measure) for label in x_labels]
    row_w = max(int(measure(text, font=font)) for text in [*y_labels, y_title]) + 2 * pad
    title_h = line + pad
    header_h = line * max(len(lines) for lines in header) + pad
    caption_h = line + pad
    top = pad + title_h + header_h
    sheet = Image.new("RGB", (row_w + columns * column_w + pad, top + rows * (cell_h + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)

    def centered(text: str, center_x: float, y: float, fill: str = "black") -> None:
        draw.text((center_x - measure(text, font=font) / 2, y), text, font=font, fill=fill)

    centered(x_title, row_w + columns * column_w / 2, pad)
    draw.text((pad, top - line - pad // 2), y_title, font=font, fill="black")
    for c, lines in enumerate(header):
        center = row_w + c * column_w + column_w / 2
        for n, text in enumerate(lines):
            centered(text, center, top - pad // 2 - (len(lines) - n) * line)
    draw.line([(pad, top - 2), (sheet.width - pad, top - 2)], fill="#bbbbbb", width=1)
    boxes = []
    for k, image in enumerate(images):
        row, column = divmod(k, columns)
        x = row_w + column * column_w + (column_w - cell_w) // 2
        y = top + row * (cell_h + caption_h)
        if column == 0:
            draw.text((pad, y + (cell_h - line) / 2), y_labels[row], font=font, fill="black")
        sheet.paste(image.convert("RGB"), (x, y))
        centered(captions[k], row_w + column * column_w + column_w / 2, y + cell_h + pad // 4, fill="#444444")
        boxes.append((x, y))
    return sheet, boxes


def _wrap(text: str, font: Any, width: float, measure: Callable[..., float]) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and measure(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
