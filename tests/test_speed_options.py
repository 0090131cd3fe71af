"""GPU-minded speed options, checked for correctness on the CPU: VAE tiling by size, channels_last, torch.compile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from backend.generation.engine import Engine
from backend.schema.requests import Txt2ImgRequest

from .conftest import TINY, pixels

REQUEST = Txt2ImgRequest(prompt="a red circle", seed=5, steps=2, width=64, height=64, model=TINY)


def test_vae_tiles_only_pictures_over_the_size(settings):
    engine = Engine(dataclasses.replace(settings, vae_tile_pixels=64 * 64, save_outputs=False))
    vae = lambda: engine.cache.pipeline(TINY, "txt2img").vae  # noqa: E731
    engine.run(REQUEST)
    assert not vae().use_tiling
    engine.run(REQUEST.replace(width=128))
    assert vae().use_tiling
    engine.run(REQUEST)  # small again: whole, as before
    assert not vae().use_tiling
    assert "VAE tiling over 0.0 MP" in engine.cache.model(TINY).memory_options


def test_channels_last_gives_the_same_picture(settings, shared_engine):
    engine = Engine(dataclasses.replace(settings, channels_last=True, save_outputs=False))
    image = engine.run(REQUEST).images[0]
    unet = engine.cache.model(TINY).base.unet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert "channels_last UNet" in engine.cache.model(TINY).memory_options
    reference = shared_engine.run(REQUEST).images[0]
    assert np.abs(pixels(image).astype(int) - pixels(reference).astype(int)).max() <= 2


def test_compile_is_opt_in_and_reports_its_time(settings, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    engine = Engine(dataclasses.replace(settings, compile_unet=True, save_outputs=False))
    engine.run(REQUEST)
    assert compiled == ["UNet2DConditionModel"]
    assert any(o.startswith("torch.compile UNet (compiled in ") for o in engine.cache.model(TINY).memory_options)


@pytest.mark.slow
def test_compiled_unet_draws_the_same_picture(settings, shared_engine):
    engine = Engine(dataclasses.replace(settings, compile_unet=True, save_outputs=False))
    image = engine.run(REQUEST).images[0]
    reference = shared_engine.run(REQUEST).images[0]
    assert np.abs(pixels(image).astype(int) - pixels(reference).astype(int)).max() <= 2
