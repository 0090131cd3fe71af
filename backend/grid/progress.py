"""Progress over a whole grid: each UNet iteration of any cell, batched or not, is one step of the grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from backend.generation.pipeline_call import StepCallback, StepEvent
from backend.generation.preview import latents_to_rgb
from backend.generation.samplers import build_scheduler
from backend.grid.plan import sampler_label
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest


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


def iterations(config: dict[str, Any], cell: Txt2ImgRequest, table: str = "sd") -> int:
    """UNet evaluations the cell's txt2img run makes (Heun and DPM2 make about two per step), its hires pass's
    included; also the last check of its sampler against its step counts before any work."""
    first = _timesteps(config, cell, cell.steps, "samplers", table)
    if not cell.enable_hr:
        return len(first.timesteps)
    # The hires pass is an img2img call: StableDiffusionImg2ImgPipeline.get_timesteps keeps the last ``strength``.
    steps = cell.hr_steps or cell.steps
    second = _timesteps(config, cell, steps, "hr_steps", table)
    start = steps - min(int(steps * cell.strength), steps)
    return len(first.timesteps) + len(second.timesteps[start * second.order :])


def _timesteps(config: dict[str, Any], cell: Txt2ImgRequest, steps: int, field: str, table: str = "sd") -> Any:
    """``table``: the model family's sampler table."""
    scheduler = build_scheduler(config, cell.sampler, cell.schedule, table=table)
    # A flow model's resolution-dependent shift (FLUX) moves the sigmas, not their count: any ``mu`` counts them.
    shift = {"mu": 1.0} if scheduler.config.get("use_dynamic_shifting") else {}
    try:
        scheduler.set_timesteps(steps, device="cpu", **shift)
    except ValueError as err:  # e.g. LCM runs at most the 50 steps it was distilled from
        label = sampler_label(cell.sampler, cell.schedule)
        raise ValidationError(field, f"{label} cannot run {steps} steps: {err}") from None
    return scheduler


class Progress:
    """Turns the cells' iterations into ``GridStep`` events counted over the whole grid.

    The batched loop ``tick``s with its latents; a cell run as its own txt2img call ``relay``s the engine's step
    events (its first pass, then its hires pass).
    """

    def __init__(self, on_step: StepCallback | None, total: int, cells: int, every: int, factors: Any, size: Any):
        self.on_step, self.total, self.cells = on_step, total, cells
        self.every, self.factors, self.size = every, factors, size
        self.done = 0
        self.cell, self.running = 1, 1
        self.cell_step, self.cell_steps = 0, 0
        self.finished: list[Image.Image] = []

    def start(self, cell: int, running: int, steps: int) -> None:
        """The next cells: ``cell`` (1-based) and the ``running - 1`` after it, ``steps`` iterations in all."""
        self.cell, self.running = cell, running
        self.cell_step, self.cell_steps = 0, steps

    def tick(self, step: int, steps: int, latents: torch.Tensor) -> None:
        preview = None
        if self.on_step is not None and self.every and step % self.every == 0:
            preview = latents_to_rgb(latents, self.factors, self.size)
        self._emit(preview)

    def relay(self, event: StepEvent) -> None:
        self._emit(event.preview)

    def _emit(self, preview: Image.Image | None) -> None:
        self.done += 1
        self.cell_step += 1
        if self.on_step is None:
            return
        # max(): a count the plan did not foresee stretches the bar rather than overflowing it.
        total, cell_steps = max(self.total, self.done), max(self.cell_steps, self.cell_step)
        self.on_step(
            GridStep(
                self.done,
                total,
                preview,
                self.cell,
                self.running,
                self.cells,
                self.cell_step,
                cell_steps,
                tuple(self.finished),
            )
        )
