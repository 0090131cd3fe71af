"""Skip CFG after a fraction of the steps: fewer UNet evaluations, written to the infotext, read back by PNG info."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from backend.generation.cfg_cutoff import guided_steps
from backend.generation.engine import Engine
from backend.grid.runner import GridRequest, GridRunner
from backend.library.infotext import parse_infotext
from backend.library.pnginfo import parameters_dict, read_parameters
from backend.models.registry import ModelRegistry
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, ControlUnit, Img2ImgRequest, InpaintRequest
from backend.settings import Settings

from .conftest import TINY, pixels, write_registry


@contextmanager
def unet_batches(pipe):
    """The batch size of every UNet evaluation ``pipe`` makes inside the block."""
    seen: list[int] = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        yield seen
    finally:
        handle.remove()


def test_guided_steps():
    assert guided_steps(20, 1.0) == 20
    assert guided_steps(20, 0.6) == 12
    assert guided_steps(4, 0.5) == 2
    assert guided_steps(4, 0.05) == 1  # at least one guided step
    assert guided_steps(3, 0.7) == 3  # 2.1 rounds up: the option never guides fewer steps than asked


def test_uncond_pass_dropped_for_the_last_steps(shared_engine, tiny_request):
    pipe = shared_engine.cache.pipeline(TINY, "txt2img")
    with unet_batches(pipe) as full:
        default = shared_engine.run(tiny_request)
    with unet_batches(pipe) as cut:
        skipped = shared_engine.run(tiny_request.replace(skip_cfg_after=0.5))
    assert full == [2, 2, 2, 2]
    assert cut == [2, 2, 1, 1]  # 4 steps, half with CFG: the last two run the prompt's pass alone
    assert not np.array_equal(pixels(default.images[0]), pixels(skipped.images[0]))
    again = shared_engine.run(tiny_request.replace(skip_cfg_after=0.5))
    assert np.array_equal(pixels(skipped.images[0]), pixels(again.images[0]))  # same seed, same pixels
    assert "Skip CFG after: 0.5" in skipped.infotext
    assert "Skip CFG after" not in default.infotext


def test_batch_of_two_keeps_each_picture(shared_engine, tiny_request):
    """With several pictures the prompt half of the doubled batch is kept for each of them."""
    request = tiny_request.replace(skip_cfg_after=0.5)
    pair = shared_engine.run(request.replace(batch_size=2))
    second = shared_engine.run(request.replace(seed=tiny_request.seed + 1))
    # Batching changes float rounding a little, never which picture comes out.
    assert np.abs(pixels(pair.images[1]) - pixels(second.images[0])).max() <= 2


def test_no_effect_where_nothing_is_skipped(shared_engine, tiny_request):
    default = pixels(shared_engine.run(tiny_request).images[0])
    # 0.99 of 4 steps rounds up to all 4: identical to the default, and not written.
    whole = shared_engine.run(tiny_request.replace(skip_cfg_after=0.99))
    assert np.array_equal(default, pixels(whole.images[0]))
    # Without CFG there is no uncond pass to skip.
    unguided = tiny_request.replace(guidance_scale=1.0)
    plain = shared_engine.run(unguided)
    cut = shared_engine.run(unguided.replace(skip_cfg_after=0.5))
    assert np.array_equal(pixels(plain.images[0]), pixels(cut.images[0]))
    assert "Skip CFG after" not in cut.infotext


def test_out_of_range_is_refused_by_name(shared_engine, tiny_request):
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValidationError) as err:
            shared_engine.run(tiny_request.replace(skip_cfg_after=bad))
        assert err.value.field == "skip_cfg_after"


def test_png_reproduces(tmp_path, cache_dir, tiny_request):
    engine = Engine(Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir))
    result = engine.run(tiny_request.replace(skip_cfg_after=0.75))
    text, info = read_parameters(result.paths[0])
    assert parameters_dict(info)["skip_cfg_after"] == 0.75
    again = engine.run(info.to_request(type(tiny_request), model=TINY))
    assert again.request.skip_cfg_after == 0.75
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))
    assert parse_infotext(text).request_fields()["skip_cfg_after"] == 0.75


def test_img2img_and_controlnet(shared_engine, test_image):
    img2img = Img2ImgRequest(
        prompt="a red circle", image=test_image, seed=7, steps=8, strength=0.5, guidance_scale=5.0, model=TINY
    )
    pipe = shared_engine.cache.pipeline(TINY, "img2img")
    with unet_batches(pipe) as seen:
        cut = shared_engine.run(img2img.replace(skip_cfg_after=0.5))
    assert seen == [2, 2, 1, 1]  # strength 0.5 of 8 steps: 4 run, 2 guided
    assert not np.array_equal(pixels(cut.images[0]), pixels(shared_engine.run(img2img).images[0]))
    control = ControlNetRequest(
        prompt="a red circle", seed=5, steps=4, guidance_scale=5.0, model=TINY, units=(ControlUnit(image=test_image),)
    )
    full = shared_engine.run(control)
    cut = shared_engine.run(control.replace(skip_cfg_after=0.5))
    assert "Skip CFG after: 0.5" in cut.infotext
    assert not np.array_equal(pixels(full.images[0]), pixels(cut.images[0]))


def test_inpaint_with_nine_channel_unet(tmp_path, cache_dir, test_image):
    """The inpainting UNet also takes the mask and masked picture, which CFG doubled too."""
    path = write_registry(tmp_path / "m.json", ["Tiny+inpaint"], inpaint="builtin:tiny-inpaint")
    engine = Engine(
        Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, default_model="Tiny+inpaint"),
        ModelRegistry.load(path),
    )
    from PIL import Image

    mask = Image.new("L", test_image.size, 0)
    mask.paste(255, (40, 8, 72, 40))
    request = InpaintRequest(
        prompt="a red circle", image=test_image, mask=mask, seed=7, steps=4, strength=1.0, model="Tiny+inpaint"
    )
    pipe = engine.cache.pipeline("Tiny+inpaint", "inpaint")
    with unet_batches(pipe) as seen:
        cut = engine.run(request.replace(skip_cfg_after=0.5))
    assert seen == [2, 2, 1, 1]
    assert not np.array_equal(pixels(cut.images[0]), pixels(engine.run(request).images[0]))


def test_grid_cells_equal_single_runs(tmp_path, cache_dir, tiny_request):
    """The grid's batched loop skips the same steps as a pipeline call does.

    In float32, so that only batching's rounding separates the two.
    """
    engine = Engine(Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, dtype="float32"))
    grid = GridRequest(
        prompt=tiny_request.prompt,
        seed=tiny_request.seed,
        steps=4,
        width=64,
        height=64,
        model=TINY,
        samplers=["Euler", "DDIM"],
        schedule="Automatic",
        cfg_list=[5.0],
        skip_cfg_after=0.5,
    )
    result = GridRunner(engine).run(grid)
    assert result.batched
    for cell, sampler in zip(result.images, ["Euler", "DDIM"], strict=True):
        single = engine.run(tiny_request.replace(sampler=sampler, skip_cfg_after=0.5, schedule="Automatic"))
        assert np.abs(pixels(cell) - pixels(single.images[0])).max() <= 1
    assert all("Skip CFG after: 0.5" in text for text in result.infotexts)
