"""The X/Y/Z plot (A1111's script): any two axes as a grid of txt2img cells, a third axis as several grids.

Axes are A1111's (``backend.grid.axes``): Seed, Steps, CFG Scale, Sampler, Schedule type, Prompt S/R, Checkpoint
name, VAE, Clip skip, Denoising (the hires pass's) and Distilled CFG Scale (families with guidance-distilled models).
Every cell is a ``Txt2ImgRequest`` checked by ``backend.schema.validate`` and the model's family before any work, so
each cell is the txt2img run its infotext describes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from backend.families import Family, family
from backend.generation.engine import Engine
from backend.generation.wildcards import resolve_prompts
from backend.grid.axes import NOTHING, Axis, axis_type, parse_values, prompt_replace, value_label
from backend.grid.plan import CELL_FIELDS, _check_cost, resolve_sampler, sampler_label, with_txt2img_fields
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.schema.seeds import RANDOM, resolve_seed
from backend.schema.validate import validate

NAMES = ("x", "y", "z")
VAE_AUTOMATIC = ("", "none", "automatic")  # A1111's names for "the model's own VAE"


@with_txt2img_fields("batch_size")
class XYZRequest:
    """A whole X/Y/Z plot: each axis is a type (``Seed``, ``Steps``… or ``Nothing``) and its values as A1111 writes
    them (``"1-5"``, ``"10-30 (+10)"``, ``"1-10 [4]"``, ``"a, \\"b, c\\""``) or a list. Every other field is a
    ``Txt2ImgRequest`` field, the same in every cell unless an axis sets it; each cell makes one picture."""

    x_type: str = "Seed"
    x_values: str = ""
    y_type: str = NOTHING
    y_values: str = ""
    z_type: str = NOTHING
    z_values: str = ""


# The XYZRequest fields every cell's Txt2ImgRequest takes as they are.
XYZ_CELL_FIELDS = tuple(name for name in CELL_FIELDS if name != "sampler") + ("sampler",)


@dataclass
class PlannedAxis:
    axis: Axis
    values: list[Any]  # what the cells get ([None] for Nothing)
    labels: list[str]  # headers ([""] for Nothing)

    @property
    def title(self) -> str:
        return "" if self.axis.name == NOTHING else self.axis.name


@dataclass
class XYZPlan:
    """A validated plot: its three axes and every cell's request (styles, seed, model, prompts resolved)."""

    axes: list[PlannedAxis]  # x, y, z
    cells: list[Txt2ImgRequest]  # cells[(z * rows + y) * columns + x]
    templates: list[dict[str, str]] = field(default_factory=list)  # each cell's dynamic-prompt infotext keys

    @property
    def columns(self) -> int:
        return len(self.axes[0].values)

    @property
    def rows(self) -> int:
        return len(self.axes[1].values)

    @property
    def seed(self) -> int:
        return self.cells[0].seed

    def where(self, index: int) -> tuple[int, int, int]:
        """Cell ``index`` → (x, y, z) value indices."""
        per_grid = self.columns * self.rows
        return index % self.columns, (index % per_grid) // self.columns, index // per_grid


def plan_xyz(request: XYZRequest, engine: Engine) -> XYZPlan:
    """Validate the whole plot, every axis value and every cell, or raise ``ValidationError`` naming the field
    (``x_values``… for an axis: the message says which axis and what to change)."""
    shared = {name: getattr(request, name) for name in XYZ_CELL_FIELDS}
    base = Txt2ImgRequest(**{**shared, "styles": tuple(request.styles or ())}, batch_size=1)
    base = base.replace(model=base.model or engine.default_model, seed=resolve_seed(base.seed))
    model = base.model if base.model in engine.registry.models else engine.default_model
    model_family = family(engine.registry.get(model).family)
    axes = [_plan_axis(request, name, base, model_family) for name in NAMES]
    for name, planned in zip(NAMES, axes, strict=True):
        unknown = [v for v in planned.values if planned.axis.field == "vae" and v and v not in engine.registry.vaes]
        if unknown:
            have = ", ".join(engine.registry.vaes) or "none (put .safetensors VAEs in models/vae and press Refresh)"
            what = f"{name.upper()} axis (VAE): unknown VAE {unknown[0]!r}"
            raise ValidationError(f"{name}_values", f"{what}; use Automatic or one of: {have}")
    used = [a.axis.name for a in axes if a.axis.name != NOTHING]
    if len(used) != len(set(used)):
        raise ValidationError("y_type", "each axis type may be used once; pick different types for X, Y and Z")
    count = len(axes[0].values) * len(axes[1].values) * len(axes[2].values)
    if count > engine.settings.grid_max_cells:
        sizes = " × ".join(str(len(a.values)) for a in axes)
        limit = engine.settings.grid_max_cells
        raise ValidationError("x_values", f"{sizes} = {count} cells; the limit is {limit} (SDSTUDIO_GRID_MAX_CELLS)")
    cells, templates = [], []
    for z, y, x in itertools.product(*(range(len(a.values)) for a in reversed(axes))):
        cell, cell_templates = _cell(base, axes, (x, y, z), engine)
        cells.append(cell)
        templates.append(cell_templates)
    _check_cost(cells, engine)
    for prompt, negative in {(cell.prompt, cell.negative_prompt) for cell in cells}:
        engine.networks.check(prompt, negative)  # a missing LoRA fails before any loading
    return XYZPlan(axes, cells, templates)


def _plan_axis(request: XYZRequest, name: str, base: Txt2ImgRequest, model_family: Family) -> PlannedAxis:
    where = f"{name}_values"
    axis = axis_type(getattr(request, f"{name}_type"), f"{name}_type")
    if axis.name == NOTHING:
        return PlannedAxis(axis, [None], [""])
    values = parse_values(axis.name, getattr(request, where), where)
    what = f"{name.upper()} axis ({axis.name})"
    table = model_family.sampler_table
    if axis.option and axis.option not in model_family.supports:
        raise ValidationError(
            f"{name}_type", f"{what}: {model_family.label} models do not use it; pick a model that does or another axis"
        )
    if axis.field == "seed":
        values = [resolve_seed(v) if v == RANDOM else v for v in values]
    elif axis.field == "sampler":
        values = [_sampler(v, base.schedule, table, what, where) for v in values]
    elif axis.field == "vae":
        values = ["" if v.lower() in VAE_AUTOMATIC else v for v in values]
    elif axis.field == "prompt" and values[0] not in base.prompt and values[0] not in base.negative_prompt:
        raise ValidationError(
            where, f"{what}: {values[0]!r} is not in the prompt; the first value is what is searched for and replaced"
        )
    elif axis.hires_only and not base.enable_hr:
        raise ValidationError(where, f"{what} sets the hires pass's denoising: tick Hires. fix or pick another axis")
    labels = [sampler_label(*v) if axis.field == "sampler" else value_label(axis, v) for v in values]
    return PlannedAxis(axis, values, labels)


def _sampler(entry: str, schedule: str, table: str, what: str, where: str) -> tuple[str, str]:
    try:
        return resolve_sampler(entry, schedule, table)
    except ValidationError as err:
        raise ValidationError(where, f"{what}: {err}") from None


def _cell(
    base: Txt2ImgRequest, axes: list[PlannedAxis], index: tuple[int, int, int], engine: Engine
) -> tuple[Txt2ImgRequest, dict[str, str]]:
    """One cell: the base with each axis's value, validated (an error names the axis), styles and prompts resolved."""
    cell = base
    for planned, k in zip(axes, index, strict=True):
        cell = _apply(cell, planned, planned.values[k])
    try:
        cell = validate(cell, engine.settings, engine.registry.names)
        cell = engine.apply_styles(cell)
        resolved = resolve_prompts(
            cell.prompt, cell.negative_prompt, [cell.seed], cell.combinatorial_prompts, engine.settings.wildcards_dir
        )[0]
        cell = cell.replace(prompt=resolved.prompt, negative_prompt=resolved.negative_prompt)
        engine.check_family(cell)
    except ValidationError as err:
        raise _named(err, axes) from None
    return cell, resolved.templates


def _apply(cell: Txt2ImgRequest, planned: PlannedAxis, value: Any) -> Txt2ImgRequest:
    axis = planned.axis
    if axis.name == NOTHING:
        return cell
    if axis.field == "sampler":
        return cell.replace(sampler=value[0], schedule=value[1])
    if axis.field == "prompt":
        search = planned.values[0]
        return cell.replace(
            prompt=prompt_replace(cell.prompt, search, value),
            negative_prompt=prompt_replace(cell.negative_prompt, search, value),
        )
    return cell.replace(**{axis.field: value})


def _named(err: ValidationError, axes: list[PlannedAxis]) -> ValidationError:
    """A cell's error under the axis that set the field it names, else as it is."""
    fields = {"sampler": ("sampler", "schedule"), "prompt": ("prompt", "negative_prompt")}
    for name, planned in zip(NAMES, axes, strict=True):
        if err.field in fields.get(planned.axis.field, (planned.axis.field,)) and planned.axis.name != NOTHING:
            return ValidationError(f"{name}_values", f"{name.upper()} axis ({planned.axis.name}): {err}")
    return err
