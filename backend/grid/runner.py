"""Running a sampler grid (X/Y plot): samplers × step counts, or samplers × CFG scales, as one labelled sheet.

The grid is planned and checked first (``backend.grid.plan``), then the prompt is encoded once for every cell
(``backend.grid.prompt``). Cells that share a step count are denoised as one batch where the batched loop implements
every option they use (``backend.grid.batch``); every other cell runs through ``Engine.run_pipeline``, the txt2img
run's own pipeline call and hires pass. Either way a cell is the txt2img run its infotext describes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from backend.families import family
from backend.generation import ip_adapter
from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled, stoppable
from backend.generation.pipeline_call import StepCallback
from backend.generation.tasks import prepare
from backend.grid.batch import can_batch, denoise_batch, unbatched_options
from backend.grid.draw import draw_grid
from backend.grid.plan import X_TITLE, GridPlan, GridRequest, cell_infotext, grid_infotext, plan_grid
from backend.grid.progress import Progress, iterations
from backend.grid.prompt import encode_prompt
from backend.library.outputs import PARAMETERS_KEY
from backend.models import zerogpu
from backend.models.devices import tile_vae_for
from backend.models.pipelines import LoadedModel
from backend.schema.requests import Txt2ImgRequest

log = logging.getLogger(__name__)
Ran = tuple[list[Image.Image], list[float]]  # a chunk's pictures and each cell's seconds


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
    batched: bool  # whether cells ran through the batched loop (else each ran as its own txt2img pipeline call)
    paths: list[Path] = field(default_factory=list)  # saved cells, when outputs are saved
    grid_path: Path | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. cells that could not be saved

    @property
    def seed(self) -> int:
        return self.plan.seed


@dataclass
class _Chunk:
    cells: list[int]  # indices into the plan's cells
    batched: bool  # through the batched loop; else one cell as its own txt2img pipeline call


def grid_runner(engine: Engine) -> Any:
    """What runs a ``GridRequest`` with ``Engine.run``'s signature: the engine itself where it runs grids (a remote
    engine sends them to a replica), else a ``GridRunner`` on its pipelines."""
    return engine if engine.runs_grids else GridRunner(engine)


class GridRunner:
    """Runs grids on an engine's cached pipelines, under the engine's one-run-at-a-time lock.

    ``run`` has ``Engine.run``'s signature, so the UI streams a grid like any generation. ``batch=False`` makes
    one pipeline call per cell (what cells the batched loop does not implement always get); the benchmark compares
    both.
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
        cells, seconds, batched, extra = self.run_cells(plan.cells, on_step, cancel)
        return self._finish(plan, cells, seconds, batched, {**extra, **plan.templates})

    def run_cells(
        self, cells: list[Txt2ImgRequest], on_step: StepCallback | None, cancel: threading.Event | None
    ) -> tuple[list[Image.Image], list[float], bool, dict[str, str]]:
        """Cells that share model, VAE, prompts and clip skip (call under the engine's lock): their pictures, each
        cell's seconds, whether any ran batched, and the infotext keys the prompt's networks add (LoRA hashes)."""
        engine, first = self.engine, cells[0]
        loaded = engine.load_for(first.model, "txt2img")
        engine.use_vae(first.model, first.vae)
        pipe = engine.cache.pipeline(first.model, "txt2img")
        ip_adapter.unload(pipe)  # an earlier request's IP-Adapter: the grid's cells run without one
        chunks = _chunks(cells, self._batchable(cells, loaded, pipe), engine.settings.max_batch)
        model_family = family(loaded.spec.family)
        table = model_family.sampler_table
        # The last check before work:
        lengths = [iterations(loaded.scheduler_config, cell, table) for cell in cells]
        progress = Progress(
            on_step,
            total=sum(max(lengths[k] for k in chunk.cells) for chunk in chunks),
            cells=len(cells),
            every=engine.settings.preview_every,
            factors=loaded.spec.latent_rgb_factors,
            size=(first.width, first.height),
        )
        # As Engine.run; before the clock starts, so loading a LoRA is not counted as the cells' encoding time.
        networks = engine.networks.apply(pipe, first.prompt, first.negative_prompt)
        guided = any(cell.guidance_scale > 1 for cell in cells)
        start = time.perf_counter()
        if model_family.prompt_weighting:
            embeddings = encode_prompt(pipe, networks.prompt, networks.negative_prompt, guided, first.clip_skip)
        else:  # its pipelines encode the text themselves (FLUX, SD3), as its txt2img run does
            embeddings = {"prompt": networks.prompt, "negative_prompt": networks.negative_prompt or None}
        encode_share = (time.perf_counter() - start) / len(cells)
        images: dict[int, Image.Image] = {}
        seconds = [0.0] * len(cells)
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation stopped")
            progress.start(chunk.cells[0] + 1, len(chunk.cells), max(lengths[k] for k in chunk.cells))
            requests = [cells[k] for k in chunk.cells]
            if chunk.batched:
                done, spent = self._run_batch(pipe, loaded, requests, embeddings, progress, cancel)
            else:
                done, spent = self._run_cell(pipe, loaded, requests[0], embeddings, progress, cancel)
            for k, image, cell_seconds in zip(chunk.cells, done, spent, strict=True):
                images[k], seconds[k] = image, cell_seconds + encode_share
            progress.finished.extend(done)  # shown while the next cells run
        batched = any(chunk.batched for chunk in chunks)
        return [images[k] for k in range(len(cells))], seconds, batched, networks.infotext

    def _batchable(self, cells: list[Txt2ImgRequest], loaded: LoadedModel, pipe: Any) -> list[bool]:
        """Which cells the batched loop may run: it must implement the pipeline and every option the cell uses."""
        if not (self.batch and family(loaded.spec.family).grid_batching and can_batch(pipe)):
            return [False] * len(cells)
        options = [unbatched_options(cell) for cell in cells]
        used = sorted({name for names in options for name in names})
        if used:
            log.info("grid cells using %s run as their own txt2img pipeline calls", ", ".join(used))
        return [not names for names in options]

    def _run_batch(self, pipe, loaded: LoadedModel, cells: list[Txt2ImgRequest], embeddings, progress, cancel) -> Ran:
        """Cells of one step count through the batched loop (on a ZeroGPU Space, one GPU call for all of them)."""
        tile_vae_for(pipe, cells[0].width, cells[0].height, self.engine.settings)  # as run_pipeline does
        steps = max(cell.steps for cell in cells)
        seconds_asked = zerogpu.duration_for(steps, cells[0].width, cells[0].height, len(cells))
        config = loaded.scheduler_config
        with stoppable(pipe, cancel):
            return zerogpu.on_gpu(
                pipe, lambda: denoise_batch(pipe, config, cells, embeddings, progress, cancel), seconds_asked
            )

    def _run_cell(self, pipe, loaded: LoadedModel, cell: Txt2ImgRequest, embeddings, progress, cancel) -> Ran:
        """One cell as its txt2img run makes it (``Engine.run_pipeline``: hires pass included), with the grid's
        prompt embeddings in place of the text."""
        start = time.perf_counter()
        prepared = prepare(cell)
        kwargs = {k: v for k, v in prepared.kwargs.items() if k not in ("prompt", "negative_prompt")}
        raw = self.engine.run_pipeline(cell, pipe, loaded, {**kwargs, **embeddings}, progress.relay, cancel)
        return prepared.finish(raw), [time.perf_counter() - start]

    def _finish(
        self, plan: GridPlan, images: list[Image.Image], seconds: list[float], batched: bool, extra: dict[str, str]
    ) -> GridResult:
        """Labels, infotexts, the grid image; everything is saved only now, so a stopped grid saves nothing."""
        columns = plan.columns
        labels = [
            f"{plan.x_labels[k % columns]} · {plan.y_labels[k // columns]} · {s:.2f} s" for k, s in enumerate(seconds)
        ]
        infotexts = [cell_infotext(cell, extra) for cell in plan.cells]
        for image, text in zip(images, infotexts, strict=True):
            image.info[PARAMETERS_KEY] = text  # kept by any PNG written from it (the UI's gallery too)
        captions = [f"{s:.2f} s" for s in seconds]
        grid, boxes = draw_grid(images, plan.x_labels, plan.y_labels, X_TITLE, plan.y_title, captions)
        text = grid_infotext(plan, extra)
        grid.info[PARAMETERS_KEY] = text
        result = GridResult(grid, text, images, infotexts, labels, seconds, boxes, plan, batched)
        if plan.cells[0].save:
            result.paths, cell_warnings = self.engine.save(images, infotexts, [plan.seed] * len(images))
            grid_paths, grid_warnings = self.engine.save([grid], [text], [plan.seed])
            result.grid_path = grid_paths[0] if grid_paths else None
            result.warnings = cell_warnings + grid_warnings
        return result


def _chunks(cells: list[Txt2ImgRequest], batchable: list[bool], size: int) -> list[_Chunk]:
    """Batchable cells grouped by step count (in grid order), each group cut into batches of at most ``size``;
    every other cell alone.

    ``size`` is the txt2img batch limit: a batch of cells needs the memory of a txt2img batch that large.
    """
    groups: dict[tuple[bool, int], list[int]] = {}
    for k, cell in enumerate(cells):
        key = (True, cell.steps) if batchable[k] else (False, k)
        groups.setdefault(key, []).append(k)
    return [
        _Chunk(group[i : i + size], batched)
        for (batched, _), group in groups.items()
        for i in range(0, len(group), size if batched else 1)
    ]
