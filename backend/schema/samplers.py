"""A1111 sampler names and schedule types, as data: which diffusers scheduler each name means, with which flags.

Adding a sampler is one line in ``SAMPLERS``; adding a schedule type is one line in ``SCHEDULES``. Each sampler
lists the schedule types its scheduler class accepts and whether its step takes eta; ``tests/test_samplers.py`` reads
the class signatures and fails if a sampler promised a flag or an eta its scheduler would silently ignore. Building
the scheduler is ``backend.generation.samplers``; this module imports nothing, so validation and the UI need no
diffusers.

The flow-matching families (FLUX, SD 3.x) have their own tables (``FLOW_SAMPLERS``, named in ``SAMPLER_TABLES``):
the same sampler names on flow schedulers; a family names its table and refuses names outside it
(``backend.families.base.Family.unsupported_sampler``); ``tests/test_dit_families.py`` runs every pair.
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
    "Simple": {},  # flow samplers: the model's own shifted schedule under Forge's name (Forge writes it in infotexts)
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_SCHEDULE = "Karras"

# Flow-matching samplers (FLUX, SD 3.x), named as Forge names them. "Automatic" and "Simple" (Forge's name) are the
# model's own shifted schedule; Karras, Exponential and Beta reshape its sigmas where the scheduler class does that in
# flow space (FlowMatchEuler and UniPC do; DPM-Solver's Karras/Exponential/Beta branches read SD's noise schedule,
# so its flow variant has the model's schedule only). ``flow_shift`` comes from the model's ``shift``
# (``backend.generation.samplers``).
FLOW_ALL = ("Automatic", "Simple", "Karras", "Exponential", "Beta")
FLOW_OWN = ("Automatic", "Simple")  # the model's schedule only
FLOW_ONLY = ("Simple",)  # SD's samplers do not offer it: A1111's SD "Simple" is another schedule, not the model's own
_FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_SAMPLERS: dict[str, SamplerSpec] = {
    "Euler": SamplerSpec("FlowMatchEulerDiscreteScheduler", schedules=FLOW_ALL),
    "Heun": SamplerSpec("FlowMatchHeunDiscreteScheduler", schedules=FLOW_OWN),
    "DPM++ 2M": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, **_FLOW},
        schedules=FLOW_OWN,
    ),
    # UniPC's flow Exponential and Beta sigmas end at 0 and give NaN pictures (diffusers 0.42): not offered.
    "UniPC": SamplerSpec("UniPCMultistepScheduler", dict(_FLOW), schedules=(*FLOW_OWN, "Karras")),
}
# Which samplers a family's models run: a family names its table (``Family.sampler_table``). "flow_sigmas": the
# pipelines hand the scheduler their own sigmas (FLUX), which FlowMatchHeunDiscreteScheduler does not take.
SAMPLER_TABLES: dict[str, dict[str, SamplerSpec]] = {
    "sd": SAMPLERS,
    "flow": FLOW_SAMPLERS,
    "flow_sigmas": {name: sampler for name, sampler in FLOW_SAMPLERS.items() if name != "Heun"},
    # Chroma's pipelines hand the scheduler their sigmas with no ``use_flow_sigmas`` escape (FLUX's have one): only
    # schedulers whose set_timesteps takes sigmas run there.
    "flow_given_sigmas": {name: sampler for name, sampler in FLOW_SAMPLERS.items() if name in ("Euler", "UniPC")},
}


def supported_schedules(sampler: str, table: str = "sd") -> list[str]:
    """Schedule types the sampler's scheduler accepts (in the sampler table ``table``), in ``SCHEDULES`` order."""
    return [name for name in SCHEDULES if name in SAMPLER_TABLES[table][sampler].schedules]


def known_samplers() -> list[str]:
    """Every sampler name of any table (what validation accepts before the model's family is known)."""
    return list(dict.fromkeys(name for samplers in SAMPLER_TABLES.values() for name in samplers))


def known_schedules(sampler: str) -> list[str]:
    """The schedule types ``sampler`` takes in any table."""
    tables = [samplers[sampler] for samplers in SAMPLER_TABLES.values() if sampler in samplers]
    return [name for name in SCHEDULES if any(name in spec.schedules for spec in tables)]


def split_legacy_name(name: str) -> tuple[str, str]:
    """Read A1111's older combined form, e.g. ``DPM++ 2M Karras`` → (``DPM++ 2M``, ``Karras``)."""
    if name in SAMPLERS:
        return name, "Automatic"
    for schedule in SCHEDULES:
        suffix = " " + schedule
        if name.lower().endswith(suffix.lower()) and name[: -len(suffix)] in SAMPLERS:
            return name[: -len(suffix)], schedule
    raise KeyError(f"unknown sampler {name!r}")
