"""Variation seeds and seed resize (A1111's "Extra" seed row): the noise as A1111 makes it, the pictures it gives on
every family's tiny model, batches, the grid, the infotext round trip, and the runs that start from a picture (img2img,
inpaint, ControlNet with an init image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from PIL import Image

from backend.generation import noise
from backend.grid.plan import GridRequest
from backend.grid.runner import GridRunner
from backend.library.infotext import format_infotext, parse_infotext
from backend.schema.requests import ControlNetRequest, ControlUnit, Img2ImgRequest, InpaintRequest, Txt2ImgRequest

from .conftest import TINY, pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"


def request(model: str = TINY, **changes) -> Txt2ImgRequest:
    values = dict(prompt="a red circle on a blue background", seed=21, steps=2, width=64, height=64,
                  sampler="Euler", schedule="Automatic", model=model, guidance_scale=1.0 if model == FLUX else 5.0)
    return Txt2ImgRequest(**{**values, **changes})


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def draw(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(seed))[0]


def test_noise_is_a1111s_slerp_and_centred_paste():
    base = request(subseed=8, subseed_strength=0.3)
    shape = (4, 8, 8)
    got = noise.picture_noise(base, torch.Generator("cpu").manual_seed(21), 21, 8, shape, shape, torch.float32)
    assert torch.allclose(got, noise.slerp(0.3, draw(21, shape), draw(8, shape)))
    assert not torch.allclose(got, draw(21, shape)) and not torch.allclose(got, draw(8, shape))
    # Seed resize: the from-size noise in the middle, the target-size noise of the same seed around it.
    resized = base.replace(subseed_strength=0.0)
    small = (4, 4, 6)
    got = noise.picture_noise(resized, torch.Generator("cpu").manual_seed(21), 21, 8, shape, small, torch.float32)
    assert torch.equal(got[:, 2:6, 1:7], draw(21, small))
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:7] = False
    assert torch.equal(got[:, outside], draw(21, shape)[:, outside])
    # A larger from-size is cropped to its middle.
    big = (4, 12, 10)
    got = noise.picture_noise(resized, torch.Generator("cpu").manual_seed(21), 21, 8, shape, big, torch.float32)
    assert torch.equal(got, draw(21, big)[:, 2:10, 1:9])


def test_strength_0_is_the_seed_1_the_subseed_and_between_differs(shared_engine):
    run = lambda **changes: shared_engine.run(request(**changes)).images[0]  # noqa: E731
    plain, other = run(), run(seed=8)
    assert same(run(subseed=8, subseed_strength=0.0), plain)
    assert same(run(subseed=8, subseed_strength=1.0), other)
    half = run(subseed=8, subseed_strength=0.5)
    assert not same(half, plain) and not same(half, other)
    assert not same(run(seed_resize_from_w=32, seed_resize_from_h=48), plain)


@pytest.mark.parametrize("model", [FLUX, pytest.param(SD3, marks=pytest.mark.slow)], ids=["flux-packed", "sd3"])
def test_transformer_families_take_the_noise_too(shared_engine, model):
    run = lambda **changes: shared_engine.run(request(model, **changes)).images[0]  # noqa: E731
    other = run(seed=8)
    assert same(run(subseed=8, subseed_strength=1.0), other)
    assert not same(run(subseed=8, subseed_strength=0.5), other)


def test_batch_subseeds_advance_like_seeds_and_infotext_round_trips(shared_engine):
    result = shared_engine.run(request(batch_size=2, subseed=100, subseed_strength=0.4))
    second = shared_engine.run(request(seed=22, subseed=101, subseed_strength=0.4))
    assert int(np.abs(pixels(result.images[1]) - pixels(second.images[0])).max()) <= 1  # a batch's float rounding
    assert result.request.subseed == 100 and second.infotext == result.infotexts[1]
    fields = parse_infotext(result.infotexts[1]).request_fields()
    assert (fields["seed"], fields["subseed"], fields["subseed_strength"]) == (22, 101, 0.4)
    assert "Variation seed: 101, Variation seed strength: 0.4" in result.infotexts[1]
    assert parse_infotext(result.infotexts[1]).to_request(Txt2ImgRequest) == second.request.replace(styles=())
    # A random subseed is resolved like the seed; seed resize is written as A1111 writes it.
    resized = shared_engine.run(request(subseed=-1, subseed_strength=0.2, seed_resize_from_w=32, seed_resize_from_h=48))
    assert resized.request.subseed >= 0 and f"Variation seed: {resized.request.subseed}," in resized.infotext
    fields = parse_infotext(resized.infotext).request_fields()
    assert (fields["seed_resize_from_w"], fields["seed_resize_from_h"]) == (32, 48)
    # Off, nothing is written (as A1111) and PNG info reads the defaults back.
    text = format_infotext(request(subseed=5), 21)
    assert "Variation" not in text and "Seed resize" not in text
    assert parse_infotext(text).to_request(Txt2ImgRequest).subseed_strength == 0.0


def picture_request(kind: type, image, **changes):
    values = dict(prompt="a red circle", image=image, seed=21, steps=4, width=64, height=64, sampler="Euler",
                  schedule="Automatic", model=TINY, strength=0.75)
    if kind is InpaintRequest:
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        values.update(mask=mask, mask_blur=0)
    return kind(**{**values, **changes})


@pytest.mark.parametrize("kind", [Img2ImgRequest, InpaintRequest], ids=["img2img", "inpaint"])
def test_image_to_image_runs_take_the_noise(shared_engine, kind, monkeypatch):
    # Every noising of the picture (img2img's start, inpaint's re-noising of the kept latents each step) uses the
    # variation noise, as A1111 noises the init latents with it.
    noised: list[torch.Tensor] = []
    add_noise = EulerDiscreteScheduler.add_noise
    spy = lambda self, x, n, t: noised.append(n) or add_noise(self, x, n, t)  # noqa: E731
    monkeypatch.setattr(EulerDiscreteScheduler, "add_noise", spy)

    def run(**changes):
        noised.clear()
        result = shared_engine.run(picture_request(kind, picture, **changes))
        return result, torch.stack(noised)

    picture = Image.new("RGB", (64, 64), (40, 90, 200))
    (plain, plain_noise), (_, other_noise) = run(), run(seed=8)
    assert len(plain_noise) == (3 if kind is InpaintRequest else 1)  # the start, then inpaint's re-noisings
    assert same(run(subseed=8, subseed_strength=0.0)[0].images[0], plain.images[0])
    # Strength 1: the subseed's noise exactly. The picture's VAE latents stay the seed's sample (diffusers draws them
    # from the seed's generator), so the pixels are the seed's encoding noised as seed = subseed noises it.
    full, full_noise = run(subseed=8, subseed_strength=1.0)
    assert torch.equal(full_noise, other_noise) and not same(full.images[0], plain.images[0])
    half, half_noise = run(subseed=8, subseed_strength=0.5)
    blend = noise.slerp(0.5, plain_noise[0, 0].float(), other_noise[0, 0].float())  # one picture's, as A1111
    assert torch.allclose(half_noise[:, 0], blend.expand_as(half_noise[:, 0]))
    assert not same(half.images[0], plain.images[0]) and not same(half.images[0], full.images[0])
    assert not same(run(seed_resize_from_w=32, seed_resize_from_h=48)[0].images[0], plain.images[0])
    if kind is InpaintRequest:  # what the mask keeps stays exactly the picture's
        assert np.array_equal(pixels(half.images[0])[:8, :], pixels(picture)[:8, :])
    assert "Variation seed: 8, Variation seed strength: 0.5" in half.infotext
    fields = parse_infotext(half.infotext).request_fields()
    assert (fields["subseed"], fields["subseed_strength"]) == (8, 0.5)
    assert parse_infotext(half.infotext).to_request(kind).subseed_strength == 0.5


@pytest.mark.parametrize("kind", [Img2ImgRequest, InpaintRequest], ids=["img2img", "inpaint"])
def test_flux_image_to_image_takes_the_noise(shared_engine, kind, monkeypatch):
    # FLUX draws its noise unpacked and noises with the flow scheduler's scale_noise: the same draw is replaced.
    noised: list[torch.Tensor] = []
    scale_noise = FlowMatchEulerDiscreteScheduler.scale_noise
    spy = lambda self, x, t, n: noised.append(n) or scale_noise(self, x, t, n)  # noqa: E731
    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "scale_noise", spy)

    def run(**changes):
        noised.clear()
        image = shared_engine.run(picture_request(kind, picture, model=FLUX, guidance_scale=1.0, **changes)).images[0]
        return image, list(noised)  # the start (unpacked), then inpaint's re-noisings (packed)

    picture = Image.new("RGB", (64, 64), (40, 90, 200))
    (plain, _), (other, other_noise) = run(), run(seed=8)
    assert same(run(subseed=8, subseed_strength=0.0)[0], plain) and other_noise
    full_noise = run(subseed=8, subseed_strength=1.0)[1]
    assert len(full_noise) == len(other_noise) and all(map(torch.equal, full_noise, other_noise))
    half = run(subseed=8, subseed_strength=0.5)[0]
    assert not same(half, plain) and not same(half, other)
    if kind is InpaintRequest:
        assert np.array_equal(pixels(half)[:8, :], pixels(picture)[:8, :])


@pytest.mark.slow
def test_hires_fix_runs_with_a_variation_seed(shared_engine):
    # The second pass starts from the first pass's pictures: it runs, the first pass taking the variation noise.
    hires = request(subseed=8, subseed_strength=0.5, enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos")
    result = shared_engine.run(hires)
    assert result.images[0].size == (96, 96) and "Variation seed: 8" in result.infotext


def test_grid_cells_take_the_variation_noise(shared_engine):
    grid = GridRequest(prompt="a red circle on a blue background", seed=21, width=64, height=64, model=TINY,
                       samplers=["Euler", "Euler a"], steps_list=[2], subseed=8, subseed_strength=0.5)
    result = GridRunner(shared_engine).run(grid)
    assert result.batched  # the batched loop draws the variation noise as the pipeline call does
    for cell, image, text in zip(result.plan.cells, result.images, result.infotexts, strict=True):
        single = shared_engine.run(cell)
        assert int(np.abs(pixels(image) - pixels(single.images[0])).max()) <= 1  # batching's float rounding
        assert text == single.infotext and "Variation seed: 8, Variation seed strength: 0.5" in text
    plain = shared_engine.run(result.plan.cells[0].replace(subseed_strength=0.0))
    assert not same(result.images[0], plain.images[0])


def test_controlnet_from_noise_takes_the_noise(shared_engine, test_image):
    def run(**changes):
        values = dict(prompt="a red circle", seed=21, steps=2, guidance_scale=5.0, width=64, height=64,
                      sampler="Euler", schedule="Automatic", model=TINY, units=(ControlUnit(image=test_image),))
        return shared_engine.run(ControlNetRequest(**{**values, **changes})).images[0]

    other = run(seed=8)
    assert same(run(subseed=8, subseed_strength=1.0), other)
    assert not same(run(subseed=8, subseed_strength=0.5), other)
    # With an init image, the noise added to its latents is the variation noise (its VAE latents stay the seed's
    # sample, as in img2img, so strength 1 is not seed = subseed's pixels there).
    pictured = run(subseed=8, subseed_strength=0.5, init_image=test_image)
    assert not same(pictured, run(init_image=test_image)) and not same(pictured, run(seed=8, init_image=test_image))
    assert same(run(subseed=8, subseed_strength=0.0, init_image=test_image), run(init_image=test_image))
