"""A1111-compatible ``parameters`` text: write it, and read ours and A1111's back.

The format is the prompt (any number of lines), an optional ``Negative prompt:`` line (which may also
continue over several lines), and a last line of ``Key: value`` pairs separated by commas; values with
commas, colons or quotes are written as JSON strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .requests import NEGATIVE_MARK, GenerationRequest
from .samplers import SAMPLERS, SCHEDULES, split_legacy_name

# Keys are short ("Schedule type", "ControlNet 0"): bounding their length keeps parsing linear in the text's
# length (an unbounded key made a long line without colons take quadratic time).
_PARAM = re.compile(r'\s*(\w[\w \-/+]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_RESIZE = re.compile(r"^(\d{1,6})x(\d{1,6})$")
NEGATIVE = NEGATIVE_MARK
MAX_NUMBER = 2**53  # larger numbers in a parameters text are not taken (seeds stop at 2**32 - 1)

# Infotext key → (request field, converter). Keys not listed here are kept in ``InfoText.extra``.
KEYS: dict[str, tuple[str, type]] = {
    "Steps": ("steps", int),
    "CFG scale": ("guidance_scale", float),
    "Seed": ("seed", int),
    "Model": ("model", str),
    "VAE": ("vae", str),
    "Denoising strength": ("strength", float),
    "Mask blur": ("mask_blur", int),
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Clip skip": ("clip_skip", int),
    "Skip CFG after": ("skip_cfg_after", float),
    "DeepCache interval": ("deep_cache", int),
}


# Every key whose value a request field takes (the rest of a text's keys are kept as they are).
REQUEST_KEYS = frozenset(KEYS) | {"Sampler", "Schedule type", "Size", "Hires resize"}


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
    """The text A1111 writes into a PNG's ``parameters`` chunk for one image of ``request``."""
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "Schedule type": request.schedule,
        "CFG scale": float(request.guidance_scale),
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model": request.model,
        "VAE": request.vae,  # left out when empty (the model's own)
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,  # A1111 writes it only when set
        # Written only when it changed the run: below 1 on a guided request.
        "Skip CFG after": request.skip_cfg_after if request.skip_cfg_after < 1 and request.guidance_scale > 1 else None,
        "DeepCache interval": request.deep_cache if request.deep_cache > 1 else None,
    }
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
        for key, (name, convert) in KEYS.items():
            if key in self.params:
                try:
                    values[name] = convert(float(self.params[key])) if convert is int else convert(self.params[key])
                except (ValueError, OverflowError):
                    pass  # an unreadable value leaves the field at its default
                if convert is not str and not abs(values.get(name, 0)) < MAX_NUMBER:
                    values.pop(name)  # absurd (or inf/nan): no request takes it, and JSON cannot carry it
        if "Hires upscale" in self.params:
            values["enable_hr"] = True
        resize = _RESIZE.match(self.params.get("Hires resize", ""))
        if resize:  # A1111's "Hires resize: 1024x0": the hires size instead of a scale
            values["enable_hr"] = True
            values["hr_resize_x"], values["hr_resize_y"] = int(resize.group(1)), int(resize.group(2))
        size = _SIZE.match(self.params.get("Size", ""))
        if size:
            values["width"], values["height"] = int(size.group(1)), int(size.group(2))
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
