"""The model registry, read from ``presets/models.json`` (data only).

A model's ``source`` is a Hugging Face hub id, a local diffusers folder (relative paths are resolved
against the project root), a single ``.safetensors``/``.ckpt`` checkpoint file, or ``builtin:<name>``
for a model the project builds itself (see ``backend.tiny``).

ControlNets are listed per family (``families.<family>.controlnets``: control type → source); a model's own
``controlnets`` replace its family's (a model with its own architecture, like the demo model, needs its own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import PROJECT_ROOT

FAMILIES = ("sd15", "sd2", "sdxl")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
BUILTIN_PREFIX = "builtin:"


class RegistryError(ValueError):
    """The models file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Defaults:
    width: int
    height: int
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    family: str
    defaults: Defaults
    latent_rgb_factors: tuple[tuple[float, float, float], ...]
    inpaint: str | None = None
    description: str = ""
    controlnets: tuple[tuple[str, str], ...] = ()  # (control type, source) pairs

    def controlnet(self, control_type: str) -> str | None:
        """The source of this model's ControlNet for ``control_type``, if it has one."""
        return dict(self.controlnets).get(control_type)

    def missing_controlnet(self, control_type: str) -> str | None:
        """Why this model cannot run ``control_type`` (None when it can)."""
        if self.controlnet(control_type) is not None:
            return None
        have = ", ".join(t for t, _ in self.controlnets) or "none"
        return (
            f"{self.name} has no {control_type} ControlNet (it has: {have}); pick another control type or model, "
            f"or list one under \"controlnets\" for it or its family ({self.family}) in presets/models.json"
        )

    @property
    def kind(self) -> str:
        return source_kind(self.source)

    def local_path(self) -> Path:
        return local_path(self.source)


def source_kind(source: str) -> str:
    """``builtin``, ``single_file``, ``folder`` or ``hub``."""
    if source.startswith(BUILTIN_PREFIX):
        return "builtin"
    if source.lower().endswith(SINGLE_FILE_SUFFIXES):
        return "single_file"
    if source.startswith((".", "/", "~")) or local_path(source).exists():
        return "folder"
    return "hub"


def local_path(source: str) -> Path:
    """A local source; relative paths are relative to the project root."""
    path = Path(source).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass
class ModelRegistry:
    models: dict[str, ModelSpec] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(self.models)}") from None

    @classmethod
    def load(cls, path: Path) -> ModelRegistry:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RegistryError(f"{path}: line {err.lineno}: {err.msg}") from None
        families: dict[str, dict[str, Any]] = data.get("families", {})
        models: dict[str, ModelSpec] = {}
        for index, entry in enumerate(data.get("models", [])):
            where = f"{path}: models[{index}]"
            try:
                family = families[entry["family"]]
                merged = {**family, **entry.get("defaults", {})}
                spec = ModelSpec(
                    name=entry["name"],
                    source=entry["source"],
                    family=entry["family"],
                    defaults=Defaults(
                        width=int(merged["width"]),
                        height=int(merged["height"]),
                        steps=int(merged["steps"]),
                        guidance_scale=float(merged["guidance_scale"]),
                    ),
                    latent_rgb_factors=tuple(tuple(row) for row in family["latent_rgb_factors"]),
                    inpaint=entry.get("inpaint"),
                    description=entry.get("description", ""),
                    controlnets=tuple(entry.get("controlnets", family.get("controlnets", {})).items()),
                )
            except KeyError as err:
                raise RegistryError(f"{where}: missing or unknown {err.args[0]!r}") from None
            if spec.family not in FAMILIES:
                raise RegistryError(f"{where}: family must be one of {FAMILIES}, got {spec.family!r}")
            models[spec.name] = spec
        if not models:
            raise RegistryError(f"{path}: no models listed")
        return cls(models)
