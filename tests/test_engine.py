"""Generation on the tiny offline model: every control reaches the pipeline and changes the result."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.generation.tasks import pipeline_key
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.requests import Txt2ImgRequest

from .conftest import TINY, pixels


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def test_same_seed_same_image_different_seed_different(shared_engine, tiny_request):
    first = shared_engine.run(tiny_request).images[0]
    again = shared_engine.run(tiny_request).images[0]
    other = shared_engine.run(tiny_request.replace(seed=tiny_request.seed + 1)).images[0]
    assert same(first, again)
    assert not same(first, other)


@pytest.mark.parametrize(
    "change",
    [
        {"guidance_scale": 9.0},
        {"negative_prompt": "green square"},
        {"prompt": "a yellow star"},
        {"steps": 6},
        {"sampler": "DDIM"},
        {"schedule": "Karras"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_control_changes_the_image(shared_engine, tiny_request, change):
    base = shared_engine.run(tiny_request).images[0]
    changed = shared_engine.run(tiny_request.replace(**change)).images[0]
    assert not same(base, changed), f"changing {change} did not change the image"


def test_size_sets_output_size(shared_engine, tiny_request):
    image = shared_engine.run(tiny_request.replace(width=96, height=64)).images[0]
    assert image.size == (96, 64)


def test_batch_uses_consecutive_seeds_and_matches_single_runs(shared_engine, tiny_request):
    batch = shared_engine.run(tiny_request.replace(batch_size=3))
    assert batch.seeds == [1234, 1235, 1236]
    single = shared_engine.run(tiny_request.replace(seed=1235)).images[0]
    # The noise is identical; only batched float rounding in the UNet may differ.
    diff = np.abs(pixels(batch.images[1]) - pixels(single))
    assert diff.max() <= 2, diff.max()
    assert not same(batch.images[0], batch.images[1])


def test_random_seed_is_resolved_and_reproduces(shared_engine, tiny_request):
    result = shared_engine.run(tiny_request.replace(seed=-1))
    assert 0 <= result.seeds[0] < 2**32
    assert result.request.seed == result.seeds[0]
    assert f"Seed: {result.seeds[0]}" in result.infotext
    again = shared_engine.run(tiny_request.replace(seed=result.seeds[0])).images[0]
    assert same(result.images[0], again)


def test_outputs_saved_with_parameters(shared_engine, tiny_request):
    result = shared_engine.run(tiny_request.replace(batch_size=2))
    assert len(result.paths) == 2
    for path, seed in zip(result.paths, result.seeds, strict=True):
        with Image.open(path) as saved:
            assert same(saved, result.images[result.paths.index(path)])
            info = parse_infotext(read_infotext(saved))
        assert info.params["Seed"] == str(seed)
        assert info.prompt == tiny_request.prompt
        assert path.name.endswith(f"-{seed}.png")


def test_progress_reports_every_step_with_preview(shared_engine, tiny_request):
    events = []
    shared_engine.run(tiny_request.replace(steps=5), on_step=events.append)
    assert [(e.step, e.total) for e in events] == [(i, 5) for i in range(1, 6)]
    assert all(e.preview is not None and e.preview.size == (64, 64) for e in events)
    # The preview follows the latents: it changes as denoising goes on.
    assert not same(events[0].preview, events[-1].preview)


def test_cancel_stops_the_run_and_saves_nothing(settings, tiny_request):
    engine = Engine(settings)
    cancel = threading.Event()
    seen = []

    def on_step(event):
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.run(tiny_request.replace(steps=10), on_step=on_step, cancel=cancel)
    assert seen == [1, 2]
    assert not settings.output_dir.exists() or not any(settings.output_dir.rglob("*.png"))
    # The engine keeps serving after a cancel.
    assert engine.run(tiny_request).images


def test_stop_acts_within_a_step(shared_engine, tiny_request):
    """Stop is checked before each UNet block: a Stop pressed during the first step ends it there."""
    cancel = threading.Event()
    shared_engine.run(tiny_request.replace(steps=1))  # loaded
    pipe = shared_engine.cache.pipeline(TINY, *pipeline_key(tiny_request))
    unet = pipe.unet
    first_resnet = next(m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D")
    ran: list[str] = []
    # The user presses Stop while the first block of the first step runs.
    pressed = first_resnet.register_forward_hook(lambda *args: (cancel.set(), ran.append("block")))
    steps: list[int] = []
    try:
        with pytest.raises(Cancelled):
            shared_engine.run(tiny_request.replace(steps=5), on_step=lambda e: steps.append(e.step), cancel=cancel)
    finally:
        pressed.remove()
    assert ran == ["block"] and steps == []  # no step finished, the next block did not run
    # The checks are gone after the run: the shared modules carry no hooks, and the next run is complete.
    assert all(not m._forward_pre_hooks for m in pipe.vae.modules()) and not first_resnet._forward_pre_hooks
    assert len(shared_engine.run(tiny_request.replace(steps=2), on_step=lambda e: steps.append(e.step)).images) == 1
    assert steps == [1, 2]


def test_default_model_falls_back_offline(settings):
    engine = Engine(settings)
    assert engine.default_model == settings.offline_model
    assert "not in the local Hugging Face cache" in engine.startup_notice
    result = engine.run(Txt2ImgRequest(prompt="x", steps=2, width=64, height=64))
    assert result.request.model == settings.offline_model
