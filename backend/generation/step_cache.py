"""Opt-in step caching: DeepCache for UNets, First Block Cache for DiT transformers (FLUX, SD 3.x).

DeepCache: the UNet's deep blocks run on every Nth step only; the steps between reuse their output and run just
the outermost layers.

Adjacent denoising steps change the UNet's high-level features very little, so reusing them saves most of a
step's UNet work at a small quality cost (Ma et al., "DeepCache: Accelerating Diffusion Models for Free",
CVPR 2024). The ``DeepCache`` package's helper does the caching by wrapping the UNet's block ``forward``
methods for the length of one pipeline call; this module only turns it on and off around the call and keeps it
correct when "skip CFG after" halves the batch mid-run (the cached outputs have the old batch size).

First Block Cache (``dit_cache``, a threshold; 0 = off): each step the transformer's first block runs, and when its
output changed by less than the threshold (relative mean difference) since the last full step, the other blocks are
skipped and their last residual is reused (diffusers' ``FirstBlockCacheConfig`` hooks, after ParaAttention's FBCache).
The hooks are put on for one pipeline call and taken off after it, so the next request runs the plain transformer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks import HookRegistry
from diffusers.hooks.first_block_cache import (
    _FBC_BLOCK_HOOK,
    _FBC_LEADER_BLOCK_HOOK,
    FBCSharedBlockState,
    _apply_fbc_block_hook,
    _apply_fbc_head_block_hook,
)
from diffusers.hooks.hooks import CacheContext, StateManager, _set_cache_context

OFF = 1  # the default: the whole UNet on every step


def active(interval: int) -> bool:
    return interval > OFF


@contextmanager
def cached_steps(pipe: Any, interval: int) -> Iterator[Any]:
    """For the ``with`` body, ``pipe``'s UNet runs fully on every ``interval``-th step (from the first) and
    reuses its deep features between; yields the helper (``None`` when off)."""
    if not active(interval):
        yield None
        return
    from DeepCache import DeepCacheSDHelper

    modules = list(pipe.unet.modules())
    own_forward = {id(m) for m in modules if "forward" in vars(m)}  # e.g. accelerate's offload hooks
    helper = DeepCacheSDHelper(pipe=pipe)
    # Branch 0: only the first down layer and the last up layer run on the cached steps (the paper's SD 1.5 setup).
    helper.set_params(cache_interval=interval, cache_branch_id=0)
    helper.enable()
    try:
        yield helper
    finally:
        helper.disable()
        for module in modules:  # disable() leaves bound methods as instance attributes; drop those it added
            if id(module) not in own_forward:
                vars(module).pop("forward", None)


def refresh(helper: Any) -> None:
    """Make the next step a full one and forget the cache (after the batch changed size)."""
    if helper is not None:
        helper.cached_output.clear()
        helper.start_timestep = None


DIT_OFF = 0.0  # the default: every transformer block on every step
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")  # FLUX has both; SD 3.x the first only


def dit_active(threshold: float) -> bool:
    return threshold > DIT_OFF


def dit_blocks(transformer: Any) -> list[torch.nn.Module]:
    """The blocks First Block Cache spans, in order: the first always runs and decides for the others. SD 3.x's
    last block returns no text stream (``context_pre_only``), which the cache's tail residual needs, so it stays
    out of the span and always runs."""
    blocks = [block for name in BLOCK_LISTS for block in getattr(transformer, name, None) or ()]
    if blocks and getattr(blocks[-1], "context_pre_only", False):
        blocks.pop()
    return blocks


@contextmanager
def dit_cached(pipe: Any, threshold: float) -> Iterator[bool]:
    """For the ``with`` body, ``pipe``'s transformer skips its blocks after the first on steps whose first-block
    output moved less than ``threshold``; yields whether the cache is on (off: no transformer, or too few blocks).

    diffusers' hooks, placed as its ``apply_first_block_cache`` places them but over ``dit_blocks`` only."""
    transformer = getattr(pipe, "transformer", None)
    blocks = dit_blocks(transformer) if transformer is not None else []
    if not dit_active(threshold) or len(blocks) < 2:
        yield False
        return
    own_forward = {id(block) for block in blocks if "forward" in vars(block)}
    state = StateManager(FBCSharedBlockState, (), {})
    _apply_fbc_head_block_hook(blocks[0], state, threshold)
    for block in blocks[1:-1]:
        _apply_fbc_block_hook(block, state)
    _apply_fbc_block_hook(blocks[-1], state, is_tail=True)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.invalidate_child_registries_cache()
    # FluxPipeline names each denoiser call's context itself ("cond"/"uncond"); SD 3.x's pipeline names none, so
    # the whole call is one context (its CFG halves go through the transformer as one batch).
    _set_cache_context(transformer, CacheContext("cond"))
    try:
        yield True
    finally:
        _set_cache_context(transformer, None)
        for block in blocks:
            block_registry = HookRegistry.check_if_exists_or_initialize(block)
            block_registry.remove_hook(_FBC_LEADER_BLOCK_HOOK, recurse=False)
            block_registry.remove_hook(_FBC_BLOCK_HOOK, recurse=False)
            if id(block) not in own_forward:  # removal leaves the plain bound method as an instance attribute
                vars(block).pop("forward", None)
        registry.invalidate_child_registries_cache()
