"""The model registry, read from ``presets/models.json`` (data only).

A model's ``source`` is a Hugging Face hub id, a local diffusers folder (relative paths are resolved
against the project root), a single ``.safetensors``/``.ckpt`` checkpoint file, or ``builtin:<name>``
for a model the project builds itself (see ``backend.models.tiny``).

ControlNets are listed per family (``families.<family>.controlnets``: control type → source); a model's own
``controlnets`` replace its family's (a model with its own architecture, like the demo model, needs its own).
Which families exist is ``backend.families``: models.json holds their editable data (defaults, preview colours,
ControlNet sources), the family modules what the architecture fixes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.families import names as family_names
from backend.models import dit_files
from backend.models.checkpoints import (
    ScanResult,
    checkpoint_dirs,
    config_dir,
    pair_inpainting,
    scan,
    scan_vaes,
    vae_dirs,
)
from backend.settings import PROJECT_ROOT, Settings

SINGLE_FILE_SUFFIXES = (".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".bin")
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
    # Single files from the checkpoint folders: the config folder from_single_file reads, the scheduler's
    # prediction type ("" = the config's own), and whether the file's UNet is a 9-channel inpainting one.
    config: str = ""
    prediction_type: str = ""
    inpainting: bool = False
    from_folder: bool = False  # found by the checkpoint scan (replaced on Refresh), not listed in models.json
    parts: tuple[tuple[str, str], ...] = ()  # FLUX / SD3: (clip_l | clip_g | t5xxl | vae, file) the file lacks

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
            f'or list one under "controlnets" for it or its family ({self.family}) in presets/models.json'
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
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # checkpoint files skipped by the last scan, and why
    vaes: dict[str, Path] = field(default_factory=dict)  # VAE name → file, from the VAE folders

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
                    defaults=_defaults(merged),
                    # an entry may override its family's preview colours (the DiT demo's 4-channel latents)
                    latent_rgb_factors=tuple(
                        tuple(row) for row in entry.get("latent_rgb_factors", family["latent_rgb_factors"])
                    ),
                    inpaint=entry.get("inpaint"),
                    description=entry.get("description", ""),
                    controlnets=tuple(entry.get("controlnets", family.get("controlnets", {})).items()),
                )
            except KeyError as err:
                raise RegistryError(f"{where}: missing or unknown {err.args[0]!r}") from None
            if spec.family not in family_names():
                raise RegistryError(f"{where}: family must be one of {family_names()}, got {spec.family!r}")
            models[spec.name] = spec
        if not models:
            raise RegistryError(f"{path}: no models listed")
        return cls(models, families)

    def add_checkpoints(self, result: ScanResult, settings: Settings) -> None:
        """Replace the checkpoint-folder models with those of a new scan (start and the Refresh button).

        A models.json entry keeps its name: a file with the same name is skipped with a message.
        """
        self.models = {name: spec for name, spec in self.models.items() if not spec.from_folder}
        problems = list(result.problems)
        listed, partners = pair_inpainting(result.checkpoints)
        configs: dict[str, str] = {}  # family → its config folder, prepared once per scan
        for checkpoint in listed:
            if checkpoint.name in self.models:
                problems.append(f"{checkpoint.path.name}: skipped, presets/models.json has a model of that name")
                continue
            family = self.families[checkpoint.family]
            config = checkpoint.config or checkpoint.family
            if config not in configs:
                configs[config] = str(config_dir(settings, config))
            partner = partners.get(checkpoint.name)
            kind = "inpainting checkpoint (inpaint tab only)" if checkpoint.inpainting else "checkpoint"
            self.models[checkpoint.name] = ModelSpec(
                name=checkpoint.name,
                source=str(checkpoint.path),
                family=checkpoint.family,
                defaults=_defaults(family),
                latent_rgb_factors=tuple(tuple(row) for row in family["latent_rgb_factors"]),
                inpaint=str(partner.path) if partner else None,
                description=f"{checkpoint.label} {kind} from {checkpoint.path.parent}"
                + (f"; inpainting with {partner.path.name}" if partner else "")
                + "".join(f"; {part} from {Path(file).name}" for part, file in checkpoint.parts),
                controlnets=tuple(family.get("controlnets", {}).items()),
                config=configs[config],
                prediction_type=checkpoint.prediction_type,
                inpainting=checkpoint.inpainting,
                from_folder=True,
                parts=checkpoint.parts,
            )
        self.problems = problems

    def scan_checkpoints(self, settings: Settings) -> None:
        """Scan the checkpoint, UNet, text-encoder and VAE folders (at start and on Refresh).

        FLUX / SD3 / Chroma files are paired with the text encoders and VAE they lack (``backend.models.dit_files``).
        """
        self.vaes, vae_problems = scan_vaes(vae_dirs(settings))
        result = scan(checkpoint_dirs(settings), settings.allow_pickle)
        transformers = dit_files.scan_transformers(dit_files.unet_dirs(settings))
        parts, part_problems = dit_files.scan_parts(dit_files.text_encoder_dirs(settings), self.vaes)
        names = {c.name for c in result.checkpoints}
        clashes = [c for c in transformers.checkpoints if c.name in names]
        checkpoints, pair_problems = dit_files.pair(
            result.checkpoints + [c for c in transformers.checkpoints if c not in clashes], parts
        )
        result = ScanResult(
            checkpoints,
            result.problems
            + transformers.problems
            + part_problems
            + pair_problems
            + [f"{c.path.name}: skipped, a checkpoint has the same name" for c in clashes],
        )
        self.add_checkpoints(result, settings)
        self.problems += vae_problems

    def checkpoint_names(self) -> list[str]:
        return [name for name, spec in self.models.items() if spec.from_folder]


def _defaults(values: dict[str, Any]) -> Defaults:
    return Defaults(
        width=int(values["width"]),
        height=int(values["height"]),
        steps=int(values["steps"]),
        guidance_scale=float(values["guidance_scale"]),
    )
