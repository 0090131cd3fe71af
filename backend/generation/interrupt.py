"""Stop within a step: a run's Stop is checked before each UNet, ControlNet and VAE block, not only between steps.

One step of a large picture on a CPU takes minutes (a 2048² SD 1.5 step: about 4), so checking between steps
alone would keep the server busy that long after Stop. The checks are forward pre-hooks on the blocks, added for
one run and removed after it: nothing stays on the shared modules.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch


class Cancelled(Exception):
    """The caller asked to stop; nothing was saved."""


# The blocks a denoising step and a VAE decode are made of (diffusers' class names): fine enough that a check
# comes every fraction of a second of a large step, coarse enough to cost nothing (a few dozen checks a step).
BLOCK_CLASSES = frozenset(
    {"ResnetBlock2D", "Transformer2DModel", "BasicTransformerBlock", "Attention", "Downsample2D", "Upsample2D"}
)


def _blocks(pipe: Any) -> Iterator[torch.nn.Module]:
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                if type(module).__name__ in BLOCK_CLASSES:
                    yield module


@contextlib.contextmanager
def stoppable(pipe: Any, cancel: threading.Event | None) -> Iterator[None]:
    """While inside, a set ``cancel`` raises ``Cancelled`` at the next block of any of ``pipe``'s models."""
    if cancel is None:
        yield
        return

    def check(module: torch.nn.Module, args: Any) -> None:
        if cancel.is_set():
            raise Cancelled("generation stopped")

    handles = [module.register_forward_pre_hook(check) for module in _blocks(pipe)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
