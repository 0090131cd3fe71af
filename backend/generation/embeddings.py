"""Textual-inversion embedding files: which model family a file is made for, and loading it into a pipeline.

An SD 1.x/2.x embedding holds one set of vectors (A1111's ``emb_params``, or diffusers' single tensor); an SDXL
embedding (the A1111/Civitai format) holds ``clip_l`` vectors for the first text encoder and ``clip_g`` vectors for
the second. Both go through diffusers' ``load_textual_inversion``, once per tokenizer/text-encoder pair, with the
file name as the token; the SDXL pipeline's own prompt encoding then uses the token in both encoders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from backend.models.checkpoints import CheckpointError, read_header
from backend.schema.errors import ValidationError

log = logging.getLogger(__name__)

SDXL_KEYS = ("clip_l", "clip_g")  # the first (CLIP ViT-L) and the second (OpenCLIP bigG) text encoder's vectors
SD_KIND = "an SD 1.x/2.x embedding (one set of vectors)"
SDXL_KIND = "an SDXL embedding (clip_l and clip_g vectors)"


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, from the file's header (no tensor data is read)."""
    return {name: shape.shape for name, shape in read_header(path).items()}


def is_sdxl(found: dict[str, tuple[int, ...]]) -> bool:
    return all(key in found for key in SDXL_KEYS)


def listing(path: Path) -> tuple[int, int]:
    """(vectors, width) as A1111's ``/sdapi/v1/embeddings`` reports them; an SDXL file's width is both encoders'."""
    found = shapes(path)
    if is_sdxl(found):
        l_shape, g_shape = found["clip_l"], found["clip_g"]
        return (g_shape[0] if len(g_shape) > 1 else 1), l_shape[-1] + g_shape[-1]
    shape = next(iter(found.values()))
    return (shape[0], shape[-1]) if len(shape) > 1 else (1, shape[0])


def _encoders(pipe: Any) -> list[tuple[str, Any, Any]]:
    """(the SDXL file's key, tokenizer, text encoder) for each text encoder the pipeline has; the key is "" on a
    one-encoder model."""
    if getattr(pipe, "text_encoder_2", None) is None:
        return [("", pipe.tokenizer, pipe.text_encoder)]
    pairs = [("clip_l", pipe.tokenizer, pipe.text_encoder), ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)]
    return [pair for pair in pairs if pair[2] is not None]


def is_loaded(pipe: Any, name: str) -> bool:
    """Whether every tokenizer of ``pipe`` already has the embedding's token (loaded by an earlier run)."""
    return all(name in tokenizer.get_added_vocab() for _, tokenizer, _ in _encoders(pipe))


def load(pipe: Any, name: str, path: Path) -> None:
    """Load the embedding file into ``pipe``'s tokenizer(s) and text encoder(s) under the token ``name``.

    The file is checked against the model first (kind, vector widths), so a refused file leaves the model as it was.
    """
    where = f"{path.name} ({path.parent})"
    try:
        found = shapes(path)
    except (CheckpointError, OSError) as err:
        raise ValidationError("prompt", f"embedding {name!r}: {err}") from None
    encoders = _encoders(pipe)
    sdxl_model = encoders[0][0] != ""
    if sdxl_model and not is_sdxl(found):
        kind = SD_KIND if len(found) == 1 else f"not an embedding (tensors {', '.join(list(found)[:4])})"
        raise ValidationError(
            "prompt",
            f"embedding {name!r}: {where} is {kind}; this is an SDXL model, which needs {SDXL_KIND}. "
            "Use an embedding made for SDXL, or pick an SD 1.x/2.x model.",
        )
    if not sdxl_model and is_sdxl(found):
        raise ValidationError(
            "prompt",
            f"embedding {name!r}: {where} is {SDXL_KIND}; this is an SD 1.x/2.x model, which needs {SD_KIND}. "
            "Pick an SDXL model, or use an embedding made for this one.",
        )
    if not sdxl_model and len(found) != 1:
        raise ValidationError(
            "prompt", f"embedding {name!r}: {where} is not an embedding (tensors {', '.join(list(found)[:4])})"
        )
    _check_widths(name, where, found, encoders)
    if sdxl_model:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    log.info("loading embedding %s from %s", name, path)
    for key, tokenizer, encoder in encoders:
        if name in tokenizer.get_added_vocab():
            continue  # this half is there already (the other one failed to load before)
        source = tensors[key] if key else str(path)
        try:
            pipe.load_textual_inversion(source, token=name, tokenizer=tokenizer, text_encoder=encoder)
        except (ValueError, KeyError, RuntimeError, OSError) as err:
            raise ValidationError("prompt", f"{where} is not an embedding this model can use: {err}"[:600]) from None


def _check_widths(name: str, where: str, found: dict[str, tuple[int, ...]], encoders: list[tuple[str, Any, Any]]):
    """Each set of vectors as wide as its text encoder's token embeddings (an SD 1.x file on SD 2.x is not)."""
    counts = set()
    for key, _, encoder in encoders:
        shape = found[key] if key else next(iter(found.values()))
        width = encoder.get_input_embeddings().weight.shape[-1]
        counts.add(shape[0] if len(shape) > 1 else 1)
        if shape[-1] != width:
            label = f"its {key} vectors are" if key else "its vectors are"
            raise ValidationError(
                "prompt",
                f"embedding {name!r}: {where} does not fit this model: {label} {shape[-1]} wide, the text encoder "
                f"takes {width} (an embedding made for another model family)",
            )
    if len(counts) > 1:
        raise ValidationError(
            "prompt", f"embedding {name!r}: {where} has a different number of clip_l and clip_g vectors"
        )
