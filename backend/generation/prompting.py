"""A1111 prompt syntax → compel, long prompts in 77-token chunks, clip skip, token counts.

A1111 writes emphasis as ``(word)`` ×1.1, ``((word))`` ×1.21, ``[word]`` ÷1.1, ``(word:1.3)``; ``\\(`` is a
literal bracket, an unbalanced bracket is literal text, and ``BREAK`` starts a new 77-token chunk. compel does
the weighting and the chunking (on SDXL in both text encoders); this module only rewrites the syntax and picks
when to use it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from backend.generation.networks import strip_tags
from backend.schema.errors import ValidationError

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
    """Tokens of the prompt's words, brackets, weights and LoRA tags left out (what counts against the 75 of a
    chunk)."""
    text = " ".join(t for runs in weighted_chunks(strip_tags(prompt)) for t, _ in runs)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def count_label(tokenizer: Any, prompt: str) -> str:
    """``42/75``; beyond one chunk ``120/150`` (the chunks it takes × 75)."""
    count = token_count(tokenizer, prompt)
    chunks = max(1, -(-count // CHUNK_TOKENS))
    return f"{count}/{chunks * CHUNK_TOKENS}"


def clip_skip_for(pipe: Any, clip_skip: int) -> int:
    """The clip skip a pipeline runs: 1 on SDXL, which A1111 ignores it for by default (SDXL already reads the
    penultimate layer), so an SDXL PNG made there with ``Clip skip: 2`` draws the same here."""
    return 1 if getattr(pipe, "text_encoder_2", None) is not None else clip_skip


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


def _pieces(text: str) -> list[str]:
    """The BREAK-separated pieces of ``text``, each encoded on its own (an empty prompt is one empty piece)."""
    return [piece for piece in re.split(r"\bBREAK\b", text) if piece.strip()] or [""]


def _compel(pipe: Any, tokenizer: Any, text_encoder: Any, embeddings_type: Any) -> Any:
    """compel for one tokenizer/text-encoder pair, chunking rather than cutting long prompts."""
    from compel import Compel, DiffusersTextualInversionManager

    # A multi-vector embedding is several tokens (name, name_1, …): compel's manager expands the name into all of
    # them, as the pipeline's own encoding does. Only then, so that other prompts keep their tokens as they are.
    # The manager converts with ``pipe.tokenizer``; SDXL's second encoder needs its own tokenizer, so it gets a view
    # of the pipeline with that one.
    added = tokenizer.get_added_vocab()
    manager = None
    if any(f"{token}_1" in added for token in added):
        view = SimpleNamespace(tokenizer=tokenizer, maybe_convert_prompt=pipe.maybe_convert_prompt)
        manager = DiffusersTextualInversionManager(view)
    return Compel(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        truncate_long_prompts=False,
        textual_inversion_manager=manager,
        returned_embeddings_type=embeddings_type,
    )


def _encode_text(compel: Any, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder's embeddings of ``text``, every BREAK piece chunked on its own and concatenated, and the token
    ids (start and end markers, padding) of its first 77-token chunk."""
    embeds, first = [], None
    for piece in _pieces(text):
        conditioning, (tokens,) = compel(to_compel(piece), return_tokenization=True)
        embeds.append(conditioning)
        if first is None:
            first = tokens[:, : compel.conditioning_provider.max_token_count]
    return torch.cat(embeds, dim=1), first


def encode(pipe: Any, prompt: str, negative: str) -> dict[str, torch.Tensor]:
    """``prompt_embeds``/``negative_prompt_embeds`` for a pipeline call: weights applied, every 75 tokens a chunk,
    and each BREAK piece chunked on its own (the pipeline repeats them per picture)."""
    from compel import ReturnedEmbeddingsType

    compel = _compel(pipe, pipe.tokenizer, pipe.text_encoder, ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    embeds = [_encode_text(compel, text)[0] for text in (prompt, negative)]
    positive, negative_embeds = compel.pad_conditioning_tensors_to_same_length(embeds)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative_embeds}


def encode_sdxl(pipe: Any, prompt: str, negative: str) -> dict[str, torch.Tensor]:
    """SDXL's four embeddings, each text as ``encode`` does it in both text encoders (their penultimate layer, as the
    pipeline takes it), concatenated along the width.

    The pooled embedding is the second encoder's, from the first chunk's tokens alone (the first chunk, up to 75
    tokens, of the first BREAK piece, weights left out): A1111 takes it from the first chunk too, and within one
    chunk those are the pipeline's own tokens. An empty negative prompt is zeros where the model asks for that
    (``force_zeros_for_empty_prompt``), as in the pipeline's own encoding and A1111.
    """
    from compel import ReturnedEmbeddingsType

    # One Compel per encoder rather than compel's list form: that one is deprecated, shares one embedding manager
    # between the two tokenizers and takes the pooled embedding from the compel-syntax text, weights and all.

    embeddings_type = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    compels = [_compel(pipe, tok, encoder, embeddings_type) for tok, encoder in pairs if encoder is not None]
    zero_negative = not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    texts = [prompt] if zero_negative else [prompt, negative]
    # Per encoder: both texts padded to the same chunk count with that encoder's empty chunk. The two tokenizers
    # share one vocabulary, so a text takes as many chunks in each.
    widths, firsts = [], []
    for compel in compels:
        encoded = [_encode_text(compel, text) for text in texts]
        widths.append(compel.pad_conditioning_tensors_to_same_length([embeds for embeds, _ in encoded]))
        firsts = [first for _, first in encoded]  # the last encoder's: the pooled one
    embeds = [torch.cat(parts, dim=-1) for parts in zip(*widths, strict=True)]
    encoder = pipe.text_encoder_2
    pooled = [encoder(ids.to(encoder.device)).text_embeds for ids in firsts]
    if zero_negative:
        embeds.append(torch.zeros_like(embeds[0]))
        pooled.append(torch.zeros_like(pooled[0]))
    return {
        "prompt_embeds": embeds[0],
        "negative_prompt_embeds": embeds[1],
        "pooled_prompt_embeds": pooled[0],
        "negative_pooled_prompt_embeds": pooled[1],
    }


def prompt_embeddings(pipe: Any, prompt: str, negative: str) -> dict[str, torch.Tensor] | None:
    """The embeddings to pass instead of the text, or None where the pipeline's own encoding is the same
    (plain text within one chunk: the pixels stay those of plain diffusers). SDXL gets the same syntax (its four
    embeddings)."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2  # SDXL's share one vocabulary
    if not any(needs_compel(text, tokenizer) for text in (prompt, negative)):
        return None
    with torch.no_grad():
        return encode_sdxl(pipe, prompt, negative) if sdxl else encode(pipe, prompt, negative)
