"""The half-precision VAE guard: never a black picture from NaNs in the decode.

Some VAEs (SDXL's original one above all) overflow in float16 and decode to NaNs, which become black images. When a
half-precision decode gives NaNs, the same latents are decoded again in float32 and the log says so once per VAE;
the VAE goes back to its own precision afterwards, so the fast path stays the normal one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def _sample(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def guard_vae_nans(vae: Any, name: str = "model") -> Any:
    """Wrap ``vae.decode`` so a NaN half-precision decode is redone in float32 (idempotent)."""
    if getattr(vae, "_sd_studio_nan_guard", False):
        return vae
    original = vae.decode
    warned = False

    def decode(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        nonlocal warned
        output = original(z, *args, **kwargs)
        dtype = vae.dtype
        if dtype not in (torch.float16, torch.bfloat16) or not torch.isnan(_sample(output)).any():
            return output
        if not warned:
            log.warning("%s: the %s VAE decode gave NaNs; decoding in float32 instead", name, dtype)
            warned = True
        # nn.Module.to: diffusers' own .to warns on every cast, and this one is meant.
        torch.nn.Module.to(vae, torch.float32)
        try:
            output = original(z.float(), *args, **kwargs)
        finally:
            torch.nn.Module.to(vae, dtype)
        sample = _sample(output)  # kept in float32: the pipelines post-process either precision
        if isinstance(output, tuple):
            return (sample, *output[1:])
        output.sample = sample
        return output

    vae.decode = decode
    vae._sd_studio_nan_guard = True
    return vae
