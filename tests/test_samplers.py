"""Every sampler and schedule type in the registry builds the right scheduler and runs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from backend.generation.samplers import build_scheduler, scheduler_class
from backend.schema.errors import ValidationError
from backend.schema.samplers import FLOW_ONLY, SAMPLERS, SCHEDULES, split_legacy_name, supported_schedules

from .conftest import pixels

PAIRS = [(s, sch) for s in SAMPLERS for sch in supported_schedules(s)]


@pytest.fixture(scope="module")
def base_config(shared_engine):
    return shared_engine.cache.model(shared_engine.default_model).scheduler_config


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_declared_schedules_are_the_ones_the_scheduler_accepts(sampler):
    """The sampler table is data (no diffusers import for validation); its schedule lists must match what each
    scheduler class accepts, so no sampler promises a flag its scheduler would silently ignore."""
    params = inspect.signature(scheduler_class(sampler).__init__).parameters
    accepted = [name for name, flags in SCHEDULES.items() if all(key in params for key in flags)]
    assert supported_schedules(sampler) == [name for name in accepted if name not in FLOW_ONLY]
    assert SAMPLERS[sampler].eta == ("eta" in inspect.signature(scheduler_class(sampler).step).parameters)


@pytest.mark.parametrize("sampler,schedule", PAIRS, ids=[f"{a}|{b}" for a, b in PAIRS])
def test_every_sampler_and_schedule_pair_steps(base_config, sampler, schedule):
    """Each pair builds the right scheduler with its flags and runs a denoising loop on random latents."""
    scheduler = build_scheduler(base_config, sampler, schedule)
    assert type(scheduler).__name__ == SAMPLERS[sampler].scheduler
    for key, value in {**SAMPLERS[sampler].config, **SCHEDULES[schedule]}.items():
        assert scheduler.config[key] == value
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    # Like the pipelines: only stochastic schedulers take a generator.
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        latents = scheduler.step(0.1 * model_input, t, latents, **extra).prev_sample
    assert torch.isfinite(latents).all()


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_generates(shared_engine, tiny_request, sampler):
    result = shared_engine.run(tiny_request.replace(sampler=sampler, schedule="Automatic", steps=3))
    image = pixels(result.images[0])
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert f"Sampler: {sampler}, Schedule type: Automatic" in result.infotext


@pytest.mark.parametrize("schedule", [name for name in SCHEDULES if name not in FLOW_ONLY])
def test_every_schedule_generates_differently(shared_engine, tiny_request, schedule):
    base = pixels(shared_engine.run(tiny_request.replace(sampler="DPM++ 2M", schedule="Automatic")).images[0])
    result = shared_engine.run(tiny_request.replace(sampler="DPM++ 2M", schedule=schedule))
    assert f"Schedule type: {schedule}" in result.infotext
    assert (schedule == "Automatic") == np.array_equal(base, pixels(result.images[0]))


def test_simple_is_forges_name_for_a_flow_models_own_schedule(shared_engine, tiny_request):
    """Forge writes "Schedule type: Simple" on FLUX pictures: the model's own schedule, the same pixels as Automatic,
    written back as Simple; SD samplers refuse it by field name (A1111's SD "Simple" is another schedule)."""
    flux = tiny_request.replace(model="Tiny FLUX (offline test model)", sampler="Euler", steps=2, batch_size=1)
    automatic = shared_engine.run(flux.replace(schedule="Automatic"))
    simple = shared_engine.run(flux.replace(schedule="Simple"))
    assert np.array_equal(pixels(automatic.images[0]), pixels(simple.images[0]))
    assert "Schedule type: Simple" in simple.infotext
    with pytest.raises(ValidationError) as caught:
        shared_engine.run(tiny_request.replace(sampler="DPM++ 2M", schedule="Simple"))
    assert caught.value.field == "schedule"


def test_all_a1111_names_are_registered():
    expected = {
        "Euler",
        "Euler a",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DPM++ 2M",
        "DPM++ 2M SDE",
        "DPM++ SDE",
        "DDIM",
        "PLMS",
        "UniPC",
        "DEIS",
        "LCM",
    }
    assert expected <= set(SAMPLERS)
    assert {"Automatic", "Karras", "Exponential"} <= set(SCHEDULES)


def test_samplers_give_different_pictures(shared_engine, tiny_request):
    euler = pixels(shared_engine.run(tiny_request.replace(sampler="Euler")).images[0])
    dpm = pixels(shared_engine.run(tiny_request.replace(sampler="DPM++ 2M SDE")).images[0])
    assert not np.array_equal(euler, dpm)


def test_schedule_flags_reset_from_model_config(base_config):
    karras = build_scheduler({**base_config, "use_karras_sigmas": True}, "Euler", "Exponential")
    assert karras.config.use_exponential_sigmas and not karras.config.use_karras_sigmas


def test_fresh_scheduler_per_call(base_config):
    assert build_scheduler(base_config, "Euler") is not build_scheduler(base_config, "Euler")


def test_unsupported_schedule_is_refused(base_config):
    assert "Karras" not in supported_schedules("DDIM")
    with pytest.raises(KeyError, match="does not support schedule 'Karras'"):
        build_scheduler(base_config, "DDIM", "Karras")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
        ("Euler a", ("Euler a", "Automatic")),
        ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
    ],
)
def test_legacy_combined_names(name, expected):
    assert split_legacy_name(name) == expected


def test_unknown_legacy_name():
    with pytest.raises(KeyError):
        split_legacy_name("Restart")
