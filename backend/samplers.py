"""A1111 sampler names and schedule types → diffusers scheduler classes and config flags.

Adding a sampler is one line in ``SAMPLERS``; adding a schedule type is one line in ``SCHEDULES``.
Which schedule types a sampler supports is read from its class signature, so the registry cannot
promise a flag the scheduler silently ignores.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import diffusers
from diffusers import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name
    config: dict[str, Any] = field(default_factory=dict)
    needs: str = ""  # optional package this scheduler imports at run time


SAMPLERS: dict[str, SamplerSpec] = {
    "Euler": SamplerSpec("EulerDiscreteScheduler"),
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "LMS": SamplerSpec("LMSDiscreteScheduler", needs="scipy"),
    "Heun": SamplerSpec("HeunDiscreteScheduler"),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M SDE": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
    ),
    "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler", needs="torchsde"),
    "DDIM": SamplerSpec("DDIMScheduler"),
    "PLMS": SamplerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": SamplerSpec("UniPCMultistepScheduler"),
    "DEIS": SamplerSpec("DEISMultistepScheduler"),
    "LCM": SamplerSpec("LCMScheduler"),
}

# Schedule type → the scheduler config flags that select it. "Automatic" keeps the model's own.
SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_SCHEDULE = "Karras"
# Flags that select a schedule; a schedule is reset to the model default before another is applied.
_SCHEDULE_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def scheduler_class(sampler: str) -> type[SchedulerMixin]:
    return getattr(diffusers, SAMPLERS[sampler].scheduler)


def supported_schedules(sampler: str) -> list[str]:
    """Schedule types whose flags the sampler's scheduler class accepts."""
    params = inspect.signature(scheduler_class(sampler).__init__).parameters
    return [name for name, flags in SCHEDULES.items() if all(k in params for k in flags)]


def build_scheduler(base_config: dict[str, Any], sampler: str, schedule: str = "Automatic") -> SchedulerMixin:
    """A fresh scheduler for one request (schedulers are stateful; never share one between runs)."""
    if sampler not in SAMPLERS:
        raise KeyError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if schedule not in supported_schedules(sampler):
        raise KeyError(
            f"sampler {sampler!r} does not support schedule {schedule!r}; "
            f"choose one of: {', '.join(supported_schedules(sampler))}"
        )
    config = dict(base_config)
    for flag in _SCHEDULE_FLAGS:
        config.pop(flag, None)
    overrides = {**SAMPLERS[sampler].config, **SCHEDULES[schedule]}
    return scheduler_class(sampler).from_config(config, **overrides)


def split_legacy_name(name: str) -> tuple[str, str]:
    """Read A1111's older combined form, e.g. ``DPM++ 2M Karras`` → (``DPM++ 2M``, ``Karras``)."""
    if name in SAMPLERS:
        return name, "Automatic"
    for schedule in SCHEDULES:
        suffix = " " + schedule
        if name.lower().endswith(suffix.lower()) and name[: -len(suffix)] in SAMPLERS:
            return name[: -len(suffix)], schedule
    raise KeyError(f"unknown sampler {name!r}")
