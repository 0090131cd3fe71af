"""A1111 prompt syntax → compel, long prompts in 77-token chunks, clip skip, token counts.

A1111 writes emphasis as ``(word)`` ×1.1, ``((word))`` ×1.21, ``[word]`` ÷1.1, ``(word:1.3)``; ``\\(`` is a
literal bracket, an unbalanced bracket is literal text, and ``BREAK`` starts a new 77-token chunk. compel does
the weighting and the chunking; this module only rewrites the syntax and picks when to use it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .requests import ValidationError

ATTENTION_UP = 1.1
CHUNK_TOKENS = 75  # a CLIP chunk: 77 tokens less the start and end markers
_WEIGHT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$")
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")


@dataclass
class _Group:
    kind: str  # "(" or "["
    parts: list[Any]


def _parse(text: str) -> list[Any]:
    """Text → nested list of strings and ``_Group``s; unmatched brackets stay literal (as in A1111)."""
    root: list[Any] = []
    stack: list[_Group] = []
    current = root
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i + 1])  # \( \) \[ \] \\ are the character itself
            i += 2
            continue
        if char in "([":
            group = _Group(char, [])
            current.append(group)
            stack.append(group)
            current = group.parts
        elif char in ")]" and stack and stack[-1].kind == ("(" if char == ")" else "["):
            stack.pop()
            current = stack[-1].parts if stack else root
        else:
            current.append(char)
        i += 1
    # Still-open groups: their opening bracket was literal text.
    while stack:
        group = stack.pop()
        parent = stack[-1].parts if stack else root
        index = next(k for k, item in enumerate(parent) if item is group)
        parent[index : index + 1] = [group.kind, *group.parts]
    return root


def _escape(text: str) -> str:
    # compel's own syntax characters, taken literally.
    return re.sub(r'([()\[\]\\"+\-])', r"\\\1", text)


def _render(parts: list[Any], weight: float, out: list[tuple[str, float]]) -> None:
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            out.append(("".join(buffer), weight))
            buffer.clear()

    for part in parts:
        if isinstance(part, str):
            buffer.append(part)
            continue
        flush()
        inner = part.parts
        factor = ATTENTION_UP if part.kind == "(" else 1 / ATTENTION_UP
        if part.kind == "(" and inner and all(isinstance(p, str) for p in inner):
            match = _WEIGHT.search("".join(inner))
            if match:  # (text:1.3) sets the weight instead of multiplying by 1.1
                out.append(("".join(inner)[: match.start()], weight * float(match.group(1))))
                continue
        _render(inner, weight * factor, out)
    flush()


def weighted_chunks(prompt: str) -> list[list[tuple[str, float]]]:
    """The prompt as BREAK-separated chunks of (text, weight) runs."""
    chunks = []
    for piece in re.split(r"\bBREAK\b", prompt):
        runs: list[tuple[str, float]] = []
        _render(_parse(piece), 1.0, runs)
        chunks.append([(text, w) for text, w in runs if text.strip()])
    return chunks


def to_compel(piece: str) -> str:
    """One BREAK-free piece of A1111 syntax → compel syntax: ``(a:1.3), b`` → ``(a)1.3, b``."""
    (runs,) = weighted_chunks(piece)
    return " ".join(f"({_escape(text.strip())}){w:.4g}" if w != 1 else _escape(text) for text, w in runs)


def needs_compel(prompt: str, tokenizer: Any) -> bool:
    """Whether ``prompt`` needs more than the pipeline's own encoding (weights, BREAK, or over one chunk)."""
    return bool(_SYNTAX.search(prompt)) or token_count(tokenizer, prompt) > CHUNK_TOKENS


def token_count(tokenizer: Any, prompt: str) -> int:
    """Tokens of the prompt's words, brackets and weights left out (what counts against the 75 of a chunk)."""
    text = " ".join(t for runs in weighted_chunks(prompt) for t, _ in runs)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def count_label(tokenizer: Any, prompt: str) -> str:
    """``42/75``; beyond one chunk ``120/150`` (the chunks it takes × 75)."""
    count = token_count(tokenizer, prompt)
    chunks = max(1, -(-count // CHUNK_TOKENS))
    return f"{count}/{chunks * CHUNK_TOKENS}"


@contextlib.contextmanager
def clip_skipped(text_encoder: Any, clip_skip: int) -> Iterator[None]:
    """The text encoder with its last ``clip_skip - 1`` layers left out, as A1111's "Clip skip" does
    (the final layer norm still applies); restored afterwards."""
    if clip_skip <= 1:
        yield
        return
    encoder = getattr(text_encoder, "text_model", text_encoder).encoder  # transformers 5 drops text_model
    layers = encoder.layers
    if clip_skip > len(layers):
        raise ValidationError("clip_skip", f"clip skip {clip_skip} is more than this model's {len(layers)} text layers")
    encoder.layers = layers[: len(layers) - (clip_skip - 1)]
    try:
        yield
    finally:
        encoder.layers = layers


def encode(pipe: Any, prompt: str, negative: str) -> dict[str, torch.Tensor]:
    """``prompt_embeds``/``negative_prompt_embeds`` for a pipeline call: weights applied, every 75 tokens a chunk,
    and each BREAK piece chunked on its own (the pipeline repeats them per picture)."""
    from compel import Compel

    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
    embeds = []
    for text in (prompt, negative):
        pieces = [piece for piece in re.split(r"\bBREAK\b", text) if piece.strip()] or [""]
        embeds.append(torch.cat([compel(to_compel(piece)) for piece in pieces], dim=1))
    positive, negative_embeds = compel.pad_conditioning_tensors_to_same_length(embeds)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative_embeds}


def prompt_embeddings(pipe: Any, prompt: str, negative: str) -> dict[str, torch.Tensor] | None:
    """The embeddings to pass instead of the text, or None where the pipeline's own encoding is the same
    (plain text within one chunk: the pixels stay those of plain diffusers)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        if any(_SYNTAX.search(text) for text in (prompt, negative)):
            raise ValidationError("prompt", "weights and BREAK are not supported for SDXL models yet: remove them")
        return None
    if not any(needs_compel(text, pipe.tokenizer) for text in (prompt, negative)):
        return None
    with torch.no_grad():
        return encode(pipe, prompt, negative)
