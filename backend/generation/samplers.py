"""Sampler name → a fresh diffusers scheduler for one run (the names and their flags: backend.schema.samplers)."""

from __future__ import annotations

from typing import Any

import diffusers
from diffusers import SchedulerMixin

from backend.schema.samplers import SAMPLER_TABLES, SCHEDULES, supported_schedules

# Flags that select a schedule; a schedule is reset to the model default before another is applied.
_SCHEDULE_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def scheduler_class(sampler: str, table: str = "sd") -> type[SchedulerMixin]:
    return getattr(diffusers, SAMPLER_TABLES[table][sampler].scheduler)


def build_scheduler(
    base_config: dict[str, Any],
    sampler: str,
    schedule: str = "Automatic",
    seed: int | None = None,
    table: str = "sd",
) -> SchedulerMixin:
    """A fresh scheduler for one request (schedulers are stateful; never share one between runs).

    ``seed``: the run's seed, for schedulers that draw noise outside the pipeline's generators (DPM++ SDE's Brownian
    tree is otherwise seeded from torch's global state, so the same parameters gave other pixels each time).
    ``table``: the model family's sampler table (``backend.schema.samplers.SAMPLER_TABLES``)."""
    samplers = SAMPLER_TABLES[table]
    if sampler not in samplers:
        raise KeyError(f"unknown sampler {sampler!r}; choose one of: {', '.join(samplers)}")
    if schedule not in supported_schedules(sampler, table):
        raise KeyError(
            f"sampler {sampler!r} does not support schedule {schedule!r}; "
            f"choose one of: {', '.join(supported_schedules(sampler, table))}"
        )
    config = dict(base_config)
    for flag in _SCHEDULE_FLAGS:
        config.pop(flag, None)
    overrides = {**samplers[sampler].config, **SCHEDULES[schedule]}
    if overrides.get("use_flow_sigmas"):
        # DPM-Solver and UniPC in flow space: the model's shift (FlowMatchEuler's ``shift``) is their ``flow_shift``.
        overrides["flow_shift"] = config.get("shift", 1.0)
    scheduler = scheduler_class(sampler, table).from_config(config, **overrides)
    if seed is not None and hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = seed
    return scheduler
