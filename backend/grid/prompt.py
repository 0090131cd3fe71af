"""The grid's prompt encoding, done once for every cell: the embeddings a pipeline call takes instead of text."""

from __future__ import annotations

from typing import Any

import torch

from backend.generation.prompting import clip_skip_for, clip_skipped, prompt_embeddings

# Keyword arguments ``pipe.encode_prompt`` returns, in its order (SD returns the first two, SDXL all four).
EMBEDDING_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def encode_prompt(
    pipe: Any, prompt: str, negative_prompt: str, guided: bool, clip_skip: int = 1
) -> dict[str, torch.Tensor]:
    """The prompt encoding, done once: the keyword arguments the pipeline's ``__call__`` takes instead of text.

    ``guided``: whether any cell uses classifier-free guidance (CFG > 1), so the negative prompt is needed.
    A1111 weights, BREAK and long prompts go through ``backend.generation.prompting``, and clip skip applies, as in
    ``backend.generation.engine.call_pipeline``; LoRA tags and embeddings are the caller's (``Networks.apply``).
    """
    with torch.no_grad(), clip_skipped(pipe.text_encoder, clip_skip_for(pipe, clip_skip)):
        embeddings = prompt_embeddings(pipe, prompt, negative_prompt)
        if embeddings is not None:
            if not guided:  # SDXL's negative pooled embedding too
                embeddings = {k: v for k, v in embeddings.items() if not k.startswith("negative_")}
            return embeddings
        encoded = pipe.encode_prompt(
            prompt=prompt,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt or None,  # as tasks.prepare passes it
        )
    return {name: value for name, value in zip(EMBEDDING_NAMES, encoded, strict=False) if value is not None}
