"""DeepCache step caching: the UNet's deep blocks run every Nth step only, the picture changes a little, the
option is written to the infotext and read back, and it leaves the UNet as it was."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, ControlUnit, Img2ImgRequest, InpaintRequest
from backend.schema.validate import validate
from backend.settings import Settings

from .conftest import TINY, pixels


@contextmanager
def deep_runs(pipe):
    """How many times the UNet's middle block really computes inside the block (cached steps skip it)."""
    seen: list[int] = []
    handle = pipe.unet.mid_block.resnets[0].register_forward_pre_hook(lambda module, args: seen.append(1))
    try:
        yield seen
    finally:
        handle.remove()


def test_deep_blocks_run_every_nth_step(shared_engine, tiny_request):
    pipe = shared_engine.cache.pipeline(TINY, "txt2img")
    request = tiny_request.replace(steps=6)
    with deep_runs(pipe) as full:
        plain = shared_engine.run(request)
    with deep_runs(pipe) as cached:
        fast = shared_engine.run(request.replace(deep_cache=3))
    assert len(full) == 6 and len(cached) == 2  # steps 1 and 4 of 6 run the whole UNet
    assert not np.array_equal(pixels(plain.images[0]), pixels(fast.images[0]))
    again = shared_engine.run(request.replace(deep_cache=3))
    assert np.array_equal(pixels(fast.images[0]), pixels(again.images[0]))  # same seed, same pixels
    assert "DeepCache interval: 3" in fast.infotext and "DeepCache" not in plain.infotext
    assert parse_infotext(fast.infotext).request_fields()["deep_cache"] == 3


def test_unet_is_left_as_it_was(shared_engine, tiny_request):
    """After a cached run no wrapper stays on the UNet: the next plain run gives the plain pixels."""
    pipe = shared_engine.cache.pipeline(TINY, "txt2img")
    before = shared_engine.run(tiny_request)
    shared_engine.run(tiny_request.replace(deep_cache=2))
    assert not [name for name, module in pipe.unet.named_modules() if "forward" in vars(module)]
    assert np.array_equal(pixels(before.images[0]), pixels(shared_engine.run(tiny_request).images[0]))


def test_with_skip_cfg_after(shared_engine, tiny_request):
    """Skip CFG halves the batch mid-run; the cache starts afresh there instead of handing back batch-2 features."""
    pipe = shared_engine.cache.pipeline(TINY, "txt2img")
    request = tiny_request.replace(steps=8, deep_cache=3)
    with deep_runs(pipe) as seen:
        both = shared_engine.run(request.replace(skip_cfg_after=0.5))
    # Whole UNet at steps 1 and 4 (guided), 5 (the first at batch 1: the cache starts again there) and 8.
    assert len(seen) == 4
    assert "Skip CFG after: 0.5" in both.infotext and "DeepCache interval: 3" in both.infotext
    assert not np.array_equal(pixels(both.images[0]), pixels(shared_engine.run(request).images[0]))


def test_other_tasks(shared_engine, test_image):
    mask = test_image.convert("L").point(lambda v: 255 if v > 128 else 0)
    common = dict(prompt="a red circle", seed=5, steps=6, guidance_scale=5.0, model=TINY)
    requests = [
        Img2ImgRequest(**common, image=test_image, strength=1.0),
        InpaintRequest(**common, image=test_image, mask=mask, strength=1.0),
        ControlNetRequest(**common, units=(ControlUnit(image=test_image),)),
    ]
    for request in requests:
        plain, cached = shared_engine.run(request), shared_engine.run(request.replace(deep_cache=3))
        assert "DeepCache interval: 3" in cached.infotext
        assert not np.array_equal(pixels(plain.images[0]), pixels(cached.images[0])), type(request).__name__


@pytest.mark.parametrize("bad", [0, 11])
def test_out_of_range_is_refused(shared_engine, tiny_request, bad):
    with pytest.raises(ValidationError) as err:
        shared_engine.run(tiny_request.replace(deep_cache=bad))
    assert err.value.field == "deep_cache"


def test_refused_with_a_compiled_unet(tiny_request):
    """A compiled UNet would bypass the cache's block wrappers: said, not silently slow."""
    with pytest.raises(ValidationError, match="compiled UNet") as err:
        validate(tiny_request.replace(deep_cache=3), Settings(offline=True, compile_unet=True), [TINY])
    assert err.value.field == "deep_cache"
    assert validate(tiny_request.replace(deep_cache=3), Settings(offline=True), [TINY]).deep_cache == 3
