"""Cheap live previews: latents → RGB by a fixed linear map per model family, no VAE, no extra weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def latents_to_rgb(
    latents: torch.Tensor, factors: Sequence[Sequence[float]], size: tuple[int, int], packed: bool = False
) -> Image.Image:
    """The first latent of the batch as an RGB image of ``size`` (width, height).

    ``packed``: FLUX's latents, a sequence of tokens each holding a 2×2 patch of every channel, unpacked first."""
    weights = torch.tensor(factors, dtype=torch.float32)  # (channels, 3)
    first = latents[0].detach().to("cpu", torch.float32)  # (channels, h, w), or (tokens, channels × 4) packed
    if packed:
        first = unpack(first, size)
    channels = min(first.shape[0], weights.shape[0])
    rgb = torch.einsum("chw,cr->hwr", first[:channels], weights[:channels])
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).numpy().astype(np.uint8)
    return Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)


def unpack(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """FLUX's packed latents (rows × cols tokens of channels × 2 × 2) → (channels, 2 rows, 2 cols); the token grid
    has the picture's aspect ratio."""
    count, width = tokens.shape
    rows = max(1, round((count * size[1] / size[0]) ** 0.5))
    cols = count // rows
    grid = tokens[: rows * cols].reshape(rows, cols, width // 4, 2, 2)
    return grid.permute(2, 0, 3, 1, 4).reshape(width // 4, rows * 2, cols * 2)
