"""A1111 sampler names and schedule types, as data: which diffusers scheduler each name means, with which flags.

Adding a sampler is one line in ``SAMPLERS``; adding a schedule type is one line in ``SCHEDULES``. Each sampler
lists the schedule types its scheduler class accepts and whether its step takes eta; ``tests/test_samplers.py`` reads
the class signatures and fails if a sampler promised a flag or an eta its scheduler would silently ignore. Building
the scheduler is ``backend.generation.samplers``; this module imports nothing, so validation and the UI need no
diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL = ("Automatic", "Karras", "Exponential", "Beta", "SGM Uniform")
PLAIN = ("Automatic", "SGM Uniform")  # schedulers without sigma schedules (ancestral Euler, DDIM, PLMS, LCM)


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name
    config: dict[str, Any] = field(default_factory=dict)
    needs: str = ""  # optional package this scheduler imports at run time
    schedules: tuple[str, ...] = ALL  # the schedule types its class accepts
    eta: bool = False  # whether its step takes eta (the noise added back per step): DDIM's, as in A1111


SAMPLERS: dict[str, SamplerSpec] = {
    "Euler": SamplerSpec("EulerDiscreteScheduler"),
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler", schedules=PLAIN),
    "LMS": SamplerSpec("LMSDiscreteScheduler", needs="scipy"),
    "Heun": SamplerSpec("HeunDiscreteScheduler"),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M SDE": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
    ),
    "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler", needs="torchsde"),
    "DDIM": SamplerSpec("DDIMScheduler", schedules=PLAIN, eta=True),
    "PLMS": SamplerSpec("PNDMScheduler", {"skip_prk_steps": True}, schedules=PLAIN),
    "UniPC": SamplerSpec("UniPCMultistepScheduler"),
    "DEIS": SamplerSpec("DEISMultistepScheduler"),
    "LCM": SamplerSpec("LCMScheduler", schedules=PLAIN),
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


def supported_schedules(sampler: str) -> list[str]:
    """Schedule types the sampler's scheduler accepts, in ``SCHEDULES`` order."""
    return [name for name in SCHEDULES if name in SAMPLERS[sampler].schedules]


def split_legacy_name(name: str) -> tuple[str, str]:
    """Read A1111's older combined form, e.g. ``DPM++ 2M Karras`` → (``DPM++ 2M``, ``Karras``)."""
    if name in SAMPLERS:
        return name, "Automatic"
    for schedule in SCHEDULES:
        suffix = " " + schedule
        if name.lower().endswith(suffix.lower()) and name[: -len(suffix)] in SAMPLERS:
            return name[: -len(suffix)], schedule
    raise KeyError(f"unknown sampler {name!r}")
