"""The half-precision VAE guard: a NaN fp16 decode is redone in float32, logged once, never a black picture."""

from __future__ import annotations

import logging

import torch

from backend.models import tiny
from backend.models.nan_guard import guard_vae_nans


def _overflowing_vae():
    """The tiny VAE in float16 with a first decoder layer that overflows half precision (as SDXL's VAE does)."""
    vae = tiny.build_components()["vae"].to(torch.float16)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(3000)
    return vae


def test_nan_decode_is_redone_in_float32_and_logged_once(caplog):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half() * 50
    vae = _overflowing_vae()
    with torch.no_grad():
        assert torch.isnan(vae.decode(latents).sample).any()  # the failure the guard exists for
        guard_vae_nans(vae, "test model")
        with caplog.at_level(logging.WARNING, logger="backend.models.nan_guard"):
            first = vae.decode(latents).sample
            second = vae.decode(latents, return_dict=False)[0]
    assert not torch.isnan(first).any() and torch.equal(first, second)
    assert vae.dtype == torch.float16  # back to its own precision for the next run
    logged = [r.message for r in caplog.records if r.name == "backend.models.nan_guard"]
    assert logged == ["test model: the torch.float16 VAE decode gave NaNs; decoding in float32 instead"]
    reference = _overflowing_vae().float()
    with torch.no_grad():
        assert torch.allclose(first, reference.decode(latents.float()).sample)


def test_a_finite_decode_is_left_alone():
    vae = tiny.build_components()["vae"]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = vae.decode(latents).sample
        guard_vae_nans(vae)
        assert torch.equal(vae.decode(latents).sample, plain)
