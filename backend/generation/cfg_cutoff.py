"""Skip CFG after a fraction of the steps: the last steps run the prompt's pass alone, not the uncond pass too.

Classifier-free guidance evaluates the UNet twice per step (negative/unconditional and prompt). Late steps only
refine detail the guided steps have laid down, so dropping the uncond pass there saves up to half of their cost
at a small quality cost (diffusers documents this as "dynamic classifier-free guidance"). It works through the
pipelines' own ``callback_on_step_end``: at the cut-off step the callback sets the guidance scale to 0 (so
``do_classifier_free_guidance`` turns false) and keeps only the prompt half of every tensor that was doubled for
CFG (prompt embeddings, SDXL's pooled embeddings and time ids, an inpainting mask, a ControlNet's image).
"""

from __future__ import annotations

import math
from typing import Any

import torch

NEVER = 1.0  # the default: CFG on every step

# Tensors the SD/SDXL/ControlNet/inpaint pipelines double for CFG ([uncond, prompt] along the batch) and accept
# back from the callback. Only those a pipeline lists in ``_callback_tensor_inputs`` are asked for.
DOUBLED = (
    "prompt_embeds",
    "add_text_embeds",
    "add_time_ids",
    "mask",
    "masked_image_latents",
    "image",
    "control_image",
)


def guided_steps(total: int, fraction: float) -> int:
    """How many of ``total`` denoising iterations keep CFG: at least one, all when ``fraction`` is 1."""
    return min(total, max(1, math.ceil(total * fraction - 1e-9)))


def active(fraction: float, guidance_scale: float) -> bool:
    """Whether the option changes anything: a cut-off below 1 on a guided run."""
    return fraction < NEVER and guidance_scale > 1


def tensor_inputs(pipe: Any) -> list[str]:
    """The doubled tensors ``pipe`` hands to the step callback (besides the latents)."""
    accepted = getattr(pipe, "_callback_tensor_inputs", [])
    return [name for name in DOUBLED if name in accepted]


def _prompt_half(value: Any, batch: int) -> Any:
    """The prompt half of a tensor doubled for CFG (or of each in a list, multi-ControlNet); others as they are."""
    if isinstance(value, torch.Tensor) and value.shape[0] == 2 * batch:
        return value[batch:]
    if isinstance(value, list):
        return [_prompt_half(item, batch) for item in value]
    return value


def drop_uncond(pipe: Any, tensors: dict[str, Any]) -> dict[str, Any]:
    """Turn CFG off for the rest of this pipeline call: guidance 0, the prompt half of every doubled tensor."""
    batch = tensors["latents"].shape[0]
    pipe._guidance_scale = 0.0  # do_classifier_free_guidance reads it (guidance > 1)
    return {name: _prompt_half(value, batch) for name, value in tensors.items()}


def with_cutoff(callback: Any, fraction: float, on_cut: Any = None) -> Any:
    """``callback`` (a ``callback_on_step_end``) that also drops the uncond pass once ``fraction`` of the
    iterations are done (pass the pipeline ``tensor_inputs(pipe)`` besides the latents); ``on_cut()`` is called
    then (the step cache starts afresh at the new batch size)."""

    def wrapped(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        tensors = callback(pipe, step, timestep, tensors)
        total = pipe.num_timesteps
        if step + 1 == guided_steps(total, fraction) < total and pipe.do_classifier_free_guidance:
            tensors = drop_uncond(pipe, tensors)
            if on_cut is not None:
                on_cut()
        return tensors

    return wrapped
