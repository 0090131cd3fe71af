"""Running an X/Y/Z plot: its cells in groups that share model, VAE, prompts and clip skip, one sheet per Z value.

Each group goes through the sampler grid's runner (``GridRunner.run_cells``): one prompt encoding, and cells of one
step count denoised as one batch where the batched loop implements every option they use. The whole plot holds the
engine's lock, as a grid does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from backend.generation.engine import Engine
from backend.generation.pipeline_call import StepCallback
from backend.grid.draw import draw_grid
from backend.grid.plan import cell_infotext
from backend.grid.runner import GridRunner
from backend.grid.xyz import NAMES, XYZPlan, XYZRequest, plan_xyz
from backend.library.outputs import PARAMETERS_KEY


@dataclass
class XYZResult:
    grids: list[Image.Image]  # one labelled sheet per Z value, each with its infotext in ``info``
    infotext: str  # the first cell's parameters plus the axes, as A1111 writes for a plot
    images: list[Image.Image]  # every cell, Z-major then row-major, each with its own infotext in ``info``
    infotexts: list[str]
    labels: list[str]  # "<x> · <y> · <z> · <seconds> s" (the axes in use)
    seconds: list[float]  # each cell's wall time (its share of the batches it ran in)
    plan: XYZPlan
    batched: bool  # whether any cells ran through the batched loop
    paths: list[Path] = field(default_factory=list)
    grid_paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.plan.seed

    @property
    def grid(self) -> Image.Image:
        return self.grids[0]

    @property
    def grid_path(self) -> Path | None:
        """The first sheet's file, as ``GridResult`` names its one sheet (the others are in ``grid_paths``)."""
        return self.grid_paths[0] if self.grid_paths else None


class XYZRunner:
    """Runs X/Y/Z plots with ``Engine.run``'s signature (so the UI streams one like any generation)."""

    def __init__(self, engine: Engine, batch: bool = True):
        self.engine = engine
        self.grid = GridRunner(engine, batch)

    def run(
        self, request: XYZRequest, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> XYZResult:
        plan = plan_xyz(request, self.engine)
        images: list[Image.Image | None] = [None] * len(plan.cells)
        seconds = [0.0] * len(plan.cells)
        extras: list[dict[str, str]] = [{} for _ in plan.cells]
        batched = False
        with self.engine.run_lock:
            for indices in _groups(plan):
                done, spent, any_batched, extra = self.grid.run_cells(
                    [plan.cells[k] for k in indices], on_step, cancel
                )
                batched |= any_batched
                for k, image, cell_seconds in zip(indices, done, spent, strict=True):
                    images[k], seconds[k], extras[k] = image, cell_seconds, extra
        return self._finish(plan, [image for image in images if image is not None], seconds, batched, extras)

    def _finish(
        self,
        plan: XYZPlan,
        images: list[Image.Image],
        seconds: list[float],
        batched: bool,
        extras: list[dict[str, str]],
    ) -> XYZResult:
        """Labels, infotexts and the sheets; saved only now, so a stopped plot saves nothing."""
        infotexts = [
            cell_infotext(cell, {**extra, **templates})
            for cell, extra, templates in zip(plan.cells, extras, plan.templates, strict=True)
        ]
        for image, text in zip(images, infotexts, strict=True):
            image.info[PARAMETERS_KEY] = text
        labels = [_label(plan, k, s) for k, s in enumerate(seconds)]
        axes_text = _axes_infotext(plan)
        text = cell_infotext(plan.cells[0], {**extras[0], **plan.templates[0], **axes_text})
        grids = []
        x, y, z = plan.axes
        per_grid = plan.columns * plan.rows
        for index, z_label in enumerate(z.labels):
            cells = slice(index * per_grid, (index + 1) * per_grid)
            x_title = f"{x.title} ({z.title}: {z_label})" if z.title else x.title
            captions = [f"{s:.2f} s" for s in seconds[cells]]
            sheet, _ = draw_grid(images[cells], x.labels, y.labels, x_title, y.title, captions)
            sheet.info[PARAMETERS_KEY] = text
            grids.append(sheet)
        result = XYZResult(grids, text, images, infotexts, labels, seconds, plan, batched)
        if plan.cells[0].save:
            result.paths, cell_warnings = self.engine.save(images, infotexts, [cell.seed for cell in plan.cells])
            result.grid_paths, grid_warnings = self.engine.save(grids, [text] * len(grids), [plan.seed] * len(grids))
            result.warnings = cell_warnings + grid_warnings
        return result


def _groups(plan: XYZPlan) -> list[list[int]]:
    """Cell indices grouped by what one prompt encoding and one loaded model serve, in plot order."""
    groups: dict[tuple, list[int]] = {}
    for k, cell in enumerate(plan.cells):
        key = (cell.model, cell.vae, cell.prompt, cell.negative_prompt, cell.clip_skip)
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def _label(plan: XYZPlan, index: int, seconds: float) -> str:
    where = plan.where(index)
    parts = [a.labels[k] for a, k in zip(plan.axes, where, strict=True) if a.title]
    return " · ".join([*parts, f"{seconds:.2f} s"])


def _axes_infotext(plan: XYZPlan) -> dict[str, str]:
    """A1111's plot keys: ``X Type``, ``X Values`` … for the axes in use."""
    text: dict[str, str] = {}
    for name, planned in zip(NAMES, plan.axes, strict=True):
        if planned.title:
            text[f"{name.upper()} Type"] = planned.title
            text[f"{name.upper()} Values"] = ", ".join(_quoted(label) for label in planned.labels)
    return text


def _quoted(label: str) -> str:
    return f'"{label}"' if "," in label else label
