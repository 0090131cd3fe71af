"""Cheap live previews: latents → RGB by a fixed linear map per model family, no VAE, no extra weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def latents_to_rgb(latents: torch.Tensor, factors: Sequence[Sequence[float]], size: tuple[int, int]) -> Image.Image:
    """The first latent of the batch as an RGB image of ``size`` (width, height)."""
    weights = torch.tensor(factors, dtype=torch.float32)  # (channels, 3)
    first = latents[0].detach().to("cpu", torch.float32)  # (channels, h, w)
    rgb = torch.einsum("chw,cr->hwr", first[: weights.shape[0]], weights)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).numpy().astype(np.uint8)
    return Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
