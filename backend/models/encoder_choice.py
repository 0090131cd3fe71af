"""Which text-encoder files a FLUX / SD3 / Chroma single file runs with: by default the automatic pairing
(``dit_files.pair``: the first fitting file of each kind, by name), else the files the request's ``text_encoders``
field names (the UI's "Text encoders" menu), checked against the transformer as the pairing checks them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from backend.models import dit_files, dit_keys
from backend.models.checkpoints import CheckpointError
from backend.models.registry import ModelSpec
from backend.schema.errors import ValidationError
from backend.settings import Settings

log = logging.getLogger(__name__)

KINDS = ("clip_l", "clip_g", "t5xxl")
FIELD = "text_encoders"


def names(value: str) -> list[str]:
    """The file names of a ``text_encoders`` value ("a.safetensors, b.safetensors")."""
    return [name.strip() for name in str(value or "").split(",") if name.strip()]


def candidates(settings: Settings) -> list[dit_files.Part]:
    """Every CLIP / T5 file of the text-encoder folders (``models/text_encoders``, ``models/clip``), by kind and
    name."""
    found, _ = dit_files.scan_parts(dit_files.text_encoder_dirs(settings), {})
    return [part for kind in KINDS for part in found[kind]]


def takes_choice(spec: ModelSpec) -> bool:
    """Whether the model loads its text encoders from files (a FLUX / SD3 / Chroma single file)."""
    return spec.family in dit_files.ENCODERS and Path(spec.source).is_file()


def fitting(spec: ModelSpec, parts: list[dit_files.Part]) -> list[dit_files.Part]:
    """The files of ``parts`` the model's transformer can take (the kinds its pipeline loads, the widths it has)."""
    try:
        transformer = dit_keys.strip_prefix(dit_files.header(Path(spec.source)))
    except (CheckpointError, OSError):
        return []
    kinds = {part for _, part, _ in dit_files.ENCODERS[spec.family][1]}
    return [p for p in parts if p.kind in kinds and dit_files.fits(spec.family, p, transformer)]


def chosen(spec: ModelSpec, value: str, settings: Settings) -> dict[str, Path]:
    """Part kind → the file the request chose for it ({} = the automatic pairing). A file that is not in the
    folders, does not fit the transformer, or a second file of one kind is refused by field name, with what fits."""
    wanted = names(value)
    if not wanted:
        return {}
    if not takes_choice(spec):
        raise ValidationError(
            FIELD, f"{spec.name} has its own text encoders: only FLUX, SD3 and Chroma single files take text-encoder "
            "files; leave Text encoders empty"
        )
    parts = candidates(settings)
    fit = fitting(spec, parts)
    have = ", ".join(f"{p.path.name} ({p.kind})" for p in fit) or "none; put them in models/text_encoders"
    files: dict[str, Path] = {}
    for name in wanted:
        part = next((p for p in parts if name in (p.path.name, p.path.stem)), None)
        if part is None:
            raise ValidationError(FIELD, f"no text-encoder file {name!r} in the folders; files that fit: {have}")
        if part not in fit:
            raise ValidationError(
                FIELD, f"{name} (a {part.kind} {part.width} wide) does not fit {spec.name}; files that fit: {have}"
            )
        if part.kind in files:
            raise ValidationError(FIELD, f"two {part.kind} files chosen ({files[part.kind].name}, {name}): keep one")
        files[part.kind] = part.path
    return files


def automatic(spec: ModelSpec, part: str) -> Path:
    """The file the model's ``part`` comes from without a choice: the paired file, else the model's own file."""
    return Path(dict(spec.parts).get(part, spec.source))


def swap(loaded: Any, files: dict[str, Path], dtype: torch.dtype) -> bool:
    """Give a loaded model's pipelines (``pipelines.LoadedModel``) the text encoders of ``files`` ({} = the automatic
    pairing's): only the encoders that change are loaded; the ones they replace are dropped from every pipeline, so
    one copy of each stays in memory. Whether anything changed."""
    current: dict[str, Path] = loaded.encoders
    if current == files:
        return False
    spec = loaded.spec
    for component, part, cls_name in dit_files.ENCODERS[spec.family][1]:
        if files.get(part) == current.get(part):
            continue
        old = getattr(loaded.base, component, None)
        if old is None:  # SD3 loaded without T5: its pipeline has no tokenizer for one
            raise ValidationError(FIELD, f"{spec.name} runs without {part}; choose none, or put one in the folders")
        path = files.get(part) or automatic(spec, part)
        log.info("%s: text encoder %s from %s", spec.name, part, path.name)
        module = dit_files.load_text_encoder(path, part, Path(spec.config) / component, cls_name, dtype)
        module = module.to(old.device)
        for pipe in (loaded.base, *loaded.derived.values()):
            setattr(pipe, component, module)
        current.pop(part, None)  # a later part failing to load leaves this one's choice recorded
        current.update({part: files[part]} if part in files else {})
    loaded.encoders = dict(files)
    return True
