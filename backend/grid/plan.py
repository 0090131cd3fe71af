"""What a sampler grid is: its request, the axes, and every cell as the txt2img request it stands for.

A cell is a ``Txt2ImgRequest`` made from the grid's own fields by name (every ``GridRequest`` field that
``Txt2ImgRequest`` has), with the cell's sampler and axis value, checked by ``backend.schema.validate``. The whole
grid is checked before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.families import family
from backend.generation.engine import Engine
from backend.generation.tasks import prepare
from backend.generation.wildcards import resolve_prompts
from backend.library.infotext import format_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.schema.samplers import SAMPLER_TABLES, SAMPLERS, SCHEDULES, split_legacy_name, supported_schedules
from backend.schema.seeds import resolve_seed
from backend.schema.validate import check_cost, validate

X_TITLE = "Sampler"
Y_AXES = {  # Y axis field of GridRequest → (request field it sets, axis title)
    "steps_list": ("steps", "Steps"),
    "cfg_list": ("guidance_scale", "CFG scale"),
}


def with_txt2img_fields(*without: str) -> Any:
    """Make the decorated class a dataclass with every ``Txt2ImgRequest`` field (its default and schema metadata)
    but ``without``, followed by the class's own: a new txt2img option is a grid option without an edit here."""

    def make(cls: type) -> type:
        own = dict(cls.__annotations__)
        copied = [f for f in dataclasses.fields(Txt2ImgRequest) if f.name not in without and f.name not in own]
        cls.__annotations__ = {**{f.name: f.type for f in copied}, **own}
        for f in copied:
            default = {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {}
            setattr(cls, f.name, field(**(default or {"default": f.default}), metadata=f.metadata))
        return dataclass(cls)

    return make


@with_txt2img_fields("sampler", "batch_size")
class GridRequest:
    """A whole grid. The X axis is ``samplers``; the Y axis is ``steps_list`` or ``cfg_list`` (exactly one).

    Every other field is a ``Txt2ImgRequest`` field, with its default, and is the same in every cell; so is the
    setting that is not an axis (``steps`` or ``guidance_scale``). A ``samplers`` entry is a sampler name, which
    takes ``schedule`` where that sampler supports it and Automatic otherwise (as the txt2img sampler menu does), or
    A1111's combined form naming its own schedule, e.g. ``DPM++ 2M Karras``. Axis values may be numbers or their
    text ("20"); they are validated like the txt2img fields. Each cell makes one picture (no ``batch_size``); one
    seed serves every cell (-1 = one random seed for the grid).
    """

    samplers: list[str] = field(default_factory=list)
    steps_list: list[Any] = field(default_factory=list)
    cfg_list: list[Any] = field(default_factory=list)


# The GridRequest fields every cell's Txt2ImgRequest takes as they are (the axes set sampler, schedule and one more).
CELL_FIELDS = tuple(f.name for f in dataclasses.fields(GridRequest) if f.name in Txt2ImgRequest.__dataclass_fields__)


@dataclass
class GridPlan:
    """A validated grid: every cell's request (styles applied, seed and model resolved), row by row."""

    y_axis: str  # "steps_list" or "cfg_list"
    x_labels: list[str]
    y_labels: list[str]
    y_values: list[str]  # as written in the infotext
    cells: list[Txt2ImgRequest]  # row-major: cells[row * columns + column]
    templates: dict[str, str] = field(default_factory=dict)  # dynamic prompts' infotext keys (Template…)

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


def sampler_choices(table: str = "sd") -> list[str]:
    """Every sampler of the sampler table ``table`` (a model family's), then each with every schedule type it
    supports there (for a multi-select menu)."""
    samplers = SAMPLER_TABLES[table]
    combined = [
        sampler_label(s, sch) for s in samplers for sch in supported_schedules(s, table) if sch != "Automatic"
    ]
    return list(samplers) + combined


def resolve_sampler(entry: str, schedule: str, table: str = "sd") -> tuple[str, str]:
    """A ``samplers`` entry → (sampler, schedule); an explicit unsupported pair is left for ``validate``.

    ``table``: the model family's sampler table, whose schedule types decide the fallback to "Automatic"."""
    name = str(entry).strip()
    if name in SAMPLER_TABLES[table]:
        return name, schedule if schedule in supported_schedules(name, table) else "Automatic"
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
    model = getattr(request, "model", "") or engine.default_model
    table = family(engine.registry.get(model).family).sampler_table if model in engine.registry.models else "sd"
    pairs = [resolve_sampler(entry, request.schedule, table) for entry in entries if str(entry).strip()]
    if not pairs:
        raise ValidationError("samplers", "pick at least one sampler")
    x_labels = [sampler_label(*pair) for pair in pairs]
    _no_repeats("samplers", x_labels)
    y_axis, values = _y_axis(request)
    count = len(pairs) * len(values)
    if count > settings.grid_max_cells:
        raise ValidationError(
            "grid",
            f"{len(pairs)} samplers × {len(values)} values = {count} cells; the limit is {settings.grid_max_cells} "
            "(SDSTUDIO_GRID_MAX_CELLS)",
        )
    cells = _cells(request, engine, pairs, y_axis, values)
    _check_cost(cells, engine)
    y_field = Y_AXES[y_axis][0]
    y_numbers = [getattr(cells[row * len(pairs)], y_field) for row in range(len(values))]
    y_values = [f"{number:g}" for number in y_numbers]
    _no_repeats(y_axis, y_values)
    y_labels = [f"{v} steps" if y_field == "steps" else f"CFG {v}" for v in y_values]
    # Styles, seed and model once for the grid; styles can still fail (an unknown name) before any work.
    seed, subseed = resolve_seed(cells[0].seed), resolve_seed(cells[0].subseed)
    model = cells[0].model or engine.default_model
    cells = [engine.apply_styles(cell).replace(seed=seed, subseed=subseed, model=model) for cell in cells]
    # Dynamic prompts: one seed, so one resolved prompt for every cell (the picture a txt2img run of it would draw).
    resolved = resolve_prompts(
        cells[0].prompt, cells[0].negative_prompt, [seed], cells[0].combinatorial_prompts, settings.wildcards_dir
    )[0]
    cells = [cell.replace(prompt=resolved.prompt, negative_prompt=resolved.negative_prompt) for cell in cells]
    for cell in cells:
        engine.check_family(cell)  # what the family cannot do is refused before any work, as for a single run
    return GridPlan(y_axis, x_labels, y_labels, y_values, cells, resolved.templates)


def _y_axis(request: GridRequest) -> tuple[str, list[Any]]:
    steps_values, cfg_values = split_list(request.steps_list), split_list(request.cfg_list)
    if bool(steps_values) == bool(cfg_values):
        which = "not both" if steps_values else "one of them"
        raise ValidationError("steps_list", f"give step counts (steps_list) or CFG scales (cfg_list), {which}")
    return ("steps_list", steps_values) if steps_values else ("cfg_list", cfg_values)


def _cells(
    request: GridRequest, engine: Engine, pairs: list[tuple[str, str]], y_axis: str, values: list[Any]
) -> list[Txt2ImgRequest]:
    """Every cell's validated request, row by row; an error names the grid field it belongs to."""
    y_field = Y_AXES[y_axis][0]
    renamed = {y_field: y_axis, "sampler": "samplers", "schedule": "samplers"}
    shared = {name: getattr(request, name) for name in CELL_FIELDS}
    base = Txt2ImgRequest(**{**shared, "styles": tuple(request.styles or ())}, batch_size=1)
    cells = []
    for value in values:
        for sampler, schedule in pairs:
            cell = base.replace(sampler=sampler, schedule=schedule, **{y_field: value})
            try:
                cells.append(validate(cell, engine.settings, engine.registry.names))
            except ValidationError as err:
                raise ValidationError(renamed.get(err.field, err.field), str(err)) from None
    return cells


def _check_cost(cells: list[Txt2ImgRequest], engine: Engine) -> None:
    """The whole grid's work against the per-request cap: every cell's steps, and its hires pass's."""
    first = cells[0]
    pixel_steps = sum(cell.width * cell.height * cell.steps for cell in cells)
    what = f"{len(cells)} cells of {first.width}×{first.height}, {pixel_steps // (first.width * first.height)} steps"
    if first.enable_hr:
        width, height = first.hires_size()
        hires = sum(width * height * (cell.hr_steps or cell.steps) for cell in cells)
        pixel_steps += hires
        what += f" and hires passes of {width}×{height}, {hires // (width * height)} steps"
    check_cost(pixel_steps, engine.settings, f"{what} in all")


def _no_repeats(field_name: str, labels: list[str]) -> None:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValidationError(field_name, f"{label} is listed twice")
        seen.add(label)


def cell_infotext(cell: Txt2ImgRequest, extra: dict[str, str] | None = None) -> str:
    """A cell's infotext: what its txt2img run writes (``extra``: what the run adds, e.g. LoRA hashes)."""
    return format_infotext(cell, cell.seed, {**prepare(cell).infotext, **(extra or {})})


def grid_infotext(plan: GridPlan, extra: dict[str, str] | None = None) -> str:
    """The first cell's parameters (as A1111 writes for a grid, LoRA hashes included) plus both axes."""
    axes = {
        "X Type": X_TITLE,
        "X Values": ", ".join(plan.x_labels),
        "Y Type": plan.y_title,
        "Y Values": ", ".join(plan.y_values),
    }
    return cell_infotext(plan.cells[0], {**(extra or {}), **axes})
