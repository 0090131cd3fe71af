"""A1111-compatible ``parameters`` text: write it, and read ours and A1111's back.

The format is the prompt (any number of lines), an optional ``Negative prompt:`` line (which may also
continue over several lines), and a last line of ``Key: value`` pairs separated by commas; values with
commas, colons or quotes are written as JSON strings.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from backend.schema.choices import NEGATIVE_MARK
from backend.schema.fields import FieldSpec, specs
from backend.schema.requests import NOT_READ as _NOT_READ
from backend.schema.requests import REQUEST_CLASSES, GenerationRequest
from backend.schema.samplers import SAMPLERS, SCHEDULES, split_legacy_name

# Keys are short ("Schedule type", "ControlNet 0"): bounding their length keeps parsing linear in the text's
# length (an unbounded key made a long line without colons take quadratic time).
_PARAM = re.compile(r'\s*(\w[\w \-/+]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
NEGATIVE = NEGATIVE_MARK
MAX_NUMBER = 2**53  # larger numbers in a parameters text are not taken (seeds stop at 2**32 - 1)

# A1111 writes these keys first, in this order; the others follow in the order the request declares them.
A1111_HEAD = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model")
CONVERTERS: dict[str, Callable[[str], Any]] = {"int": lambda text: int(float(text)), "float": float, "str": str}


def _infotext_fields(cls: type[GenerationRequest]) -> list[tuple[str, str, FieldSpec]]:
    """(key, field name, spec) of every field of ``cls`` the infotext has, A1111's head first."""
    found = [(meta.infotext, item.name, meta) for item, meta in specs(cls) if meta.infotext]
    head = [entry for key in A1111_HEAD for entry in found if entry[0] == key]
    return head + [entry for entry in found if entry[0] not in A1111_HEAD]


def _readers() -> dict[str, tuple[str, FieldSpec, str]]:
    """Infotext key → (field name, spec, field type) over every request class; a key shared by several classes
    (Denoising strength) sets the same field in each."""
    readers: dict[str, tuple[str, FieldSpec, str]] = {}
    for cls in REQUEST_CLASSES:
        types = {item.name: str(item.type) for item in dataclasses.fields(cls)}
        for key, name, meta in _infotext_fields(cls):
            readers.setdefault(key, (name, meta, types[name]))
    return readers


READERS = _readers()
# Every key whose value a request field takes (the rest of a text's keys are kept as they are).
REQUEST_KEYS = frozenset(key for key, (_, meta, _) in READERS.items() if meta.read is not _NOT_READ) | {
    "Sampler",
    "Schedule type",
}


def _quote(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if any(c in text for c in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def format_infotext(request: GenerationRequest, seed: int, extra: Mapping[str, Any] | None = None) -> str:
    """The text A1111 writes into a PNG's ``parameters`` chunk for one image of ``request``: every field the schema
    gives an infotext key, then ``extra`` (what the run adds: LoRA hashes, ControlNet units)."""
    image = request.replace(seed=seed)
    params: dict[str, Any] = {}
    for key, name, meta in _infotext_fields(type(request)):
        params[key] = meta.written(image) if meta.written is not None else getattr(image, name)
    params.update(extra or {})
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"{NEGATIVE} {request.negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value not in (None, "")))
    return "\n".join(lines)


@dataclass
class InfoText:
    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)  # every key as written, values unquoted

    def request_fields(self) -> dict[str, Any]:
        """The request fields this text sets (sampler and schedule resolved, size split)."""
        values: dict[str, Any] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt}
        for key, (name, meta, kind) in READERS.items():
            if key in self.params:
                values.update(_read(self.params[key], name, meta, kind))
        sampler = self.params.get("Sampler")
        if sampler:
            try:
                values["sampler"], values["schedule"] = split_legacy_name(sampler)
            except KeyError:
                values["sampler"] = sampler  # unknown to us: validation will name it
        schedule = self.params.get("Schedule type")
        if schedule in SCHEDULES:
            values["schedule"] = schedule
        elif sampler in SAMPLERS and "schedule" not in values:
            values["schedule"] = "Automatic"
        return values

    def to_request(self, cls: type[GenerationRequest], **overrides: Any) -> GenerationRequest:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in self.request_fields().items() if k in names}
        values.update(overrides)
        return cls(**values)


def parse_infotext(text: str) -> InfoText:
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    pairs = _PARAM.findall(last)
    if len(pairs) < 3:  # the same heuristic A1111 uses: a short last line is still prompt text
        pairs = []
    else:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    return InfoText(
        prompt="\n".join(prompt).strip(),
        negative_prompt="\n".join(negative).strip(),
        params={key.strip(): _unquote(value) for key, value in pairs},
    )


def _read(text: str, name: str, meta: FieldSpec, kind: str) -> dict[str, Any]:
    """One key's value as request fields; an unreadable or absurd value (inf, nan, > 2**53) leaves them unset."""
    try:
        values = meta.read(text) if meta.read is not None else {name: CONVERTERS.get(kind, str)(text)}
    except (ValueError, OverflowError):
        return {}
    numbers = [v for v in values.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return values if all(abs(v) < MAX_NUMBER for v in numbers) else {}
