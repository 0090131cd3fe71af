"""Validation: one place, clear messages that name the field and the allowed range."""

from __future__ import annotations

import pytest

from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest, field_limits
from backend.schema.validate import validate
from backend.settings import Settings

SETTINGS = Settings(max_width=1024, max_height=1024, max_steps=50, max_batch=4)
MODELS = ["A", "B"]


def check(**fields):
    return validate(Txt2ImgRequest(**fields), SETTINGS, MODELS)


def test_valid_request_is_normalised():
    req = check(seed=7.0, steps=20.0, width=512, height=768, batch_size=2.0, prompt=None)
    assert (req.seed, req.steps, req.batch_size, req.prompt) == (7, 20, 2, "")
    assert isinstance(req.steps, int)


@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({"steps": 0}, "steps", "steps must be between 1 and 50, got 0"),
        ({"steps": 51}, "steps", "steps must be between 1 and 50, got 51"),
        ({"steps": 2.5}, "steps", "steps must be a whole number"),
        ({"steps": "many"}, "steps", "steps must be a whole number"),
        ({"batch_size": 5}, "batch_size", "batch_size must be between 1 and 4"),
        ({"width": 2048}, "width", "width must be between 64 and 1024, got 2048"),
        ({"width": 500}, "width", "width 500 is not a multiple of 8: use 496 or 504"),
        ({"height": 513}, "height", "height 513 is not a multiple of 8: use 512 or 520"),
        ({"guidance_scale": -1}, "guidance_scale", "guidance_scale must be between 0 and 30"),
        ({"guidance_scale": float("nan")}, "guidance_scale", "must be a finite number"),
        ({"seed": -2}, "seed", "seed must be between -1 and 4294967295, got -2"),
        ({"sampler": "Restart"}, "sampler", "unknown sampler 'Restart'; choose one of: Euler,"),
        ({"sampler": "DDIM", "schedule": "Karras"}, "schedule", "does not support schedule 'Karras'"),
        ({"model": "C"}, "model", "unknown model 'C'; choose one of: A, B"),
        ({"prompt": 42}, "prompt", "prompt must be text"),
        ({"prompt": "x" * 5000}, "prompt", "the limit is 4000"),
    ],
)
def test_bad_values_name_field_and_range(fields, field, message):
    with pytest.raises(ValidationError) as err:
        check(**fields)
    assert err.value.field == field
    assert message in str(err.value)


def test_limits_follow_settings():
    limits = field_limits(Settings(max_steps=80, max_width=640))
    assert limits["steps"].maximum == 80
    assert limits["width"].maximum == 640 and limits["width"].step == 8


def test_limits_from_environment():
    settings = Settings.from_env({"SDSTUDIO_MAX_STEPS": "12"})
    with pytest.raises(ValidationError, match="between 1 and 12"):
        validate(Txt2ImgRequest(steps=13), settings)


def test_costly_requests_are_refused_up_front_with_the_limit():
    from backend.models.devices import CPU_PIXEL_STEPS, pixel_step_limit

    cpu = Settings(device="cpu")
    assert pixel_step_limit(cpu) == CPU_PIXEL_STEPS
    # The documented limits at once (2048², 150 steps, batch 8): refused, with the sum and the limit.
    with pytest.raises(ValidationError, match=r"2048×2048 × 150 steps × 8 pictures = 5,033.2 M pixel-steps; .* 26.2 M"):
        validate(Txt2ImgRequest(width=2048, height=2048, steps=150, batch_size=8), Settings(device="cpu"))
    owner = Settings(device="cpu", max_pixel_steps=64 * 64 * 10)
    validate(Txt2ImgRequest(width=64, height=64, steps=10), owner)
    expected = "64×64 × 11 steps × 1 pictures = 45,056 pixel-steps; .* 40,960 per"
    with pytest.raises(ValidationError, match=expected) as err:
        validate(Txt2ImgRequest(width=64, height=64, steps=11), owner)
    assert err.value.field == "steps"
