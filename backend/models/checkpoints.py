"""Checkpoint folders: the single-file models people already have (A1111 / ComfyUI ``.safetensors``).

Every ``*.safetensors`` in the checkpoint folders becomes a model named after its file. Its family is read from the
file's tensor names and shapes only (the safetensors header, no weights are read), with diffusers' own
``infer_diffusers_model_type``: the same keys ComfyUI and A1111 look at. Loading (``backend.models.pipelines``) uses
diffusers' ``from_single_file`` with the shipped per-family config folder, so no network is needed. Which model types
exist and what each family's files need (prediction type, label) is declared by the families (``backend.families``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backend import families
from backend.models import dit_keys
from backend.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DEFAULT_DIR = PROJECT_ROOT / "models" / "checkpoints"
DEFAULT_VAE_DIR = PROJECT_ROOT / "models" / "vae"
VAE_KEYS = ("decoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight")  # an original-layout VAE
INPAINT_SUFFIX = re.compile(r"[-_.]?inpainting$", re.IGNORECASE)

UNET_PREFIX = "model.diffusion_model."
# XLabs FLUX LoRAs name theirs processor.qkv_lora1 / proj_lora2 (down/up without the lora_ prefix)
LORA_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora_unet_", "lora_te", "qkv_lora", "proj_lora")


def is_lora(keys: Iterable[str]) -> bool:
    """Whether a file's tensor names are a LoRA's (Kohya, PEFT, BFL, ComfyUI or XLabs names)."""
    return any(marker in key for key in keys for marker in LORA_MARKERS)


class CheckpointError(ValueError):
    """A file in a checkpoint folder that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the file name without its extension
    path: Path
    family: str  # a family name of backend.families
    inpainting: bool = False
    prediction_type: str = "epsilon"  # or v_prediction (SD 2.x 768-v models)
    # FLUX / SD3 / Chroma files (backend.models.dit_files): the variant's label, the config folder's name when it is
    # not the family's, what the file holds itself (clip_l, clip_g, t5xxl, vae) and the files found for what it lacks.
    variant: str = ""
    config: str = ""
    holds: tuple[str, ...] = ()
    parts: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        if self.variant:
            return self.variant
        return families.family(self.family).checkpoint_label(self.prediction_type, self.inpainting)


@dataclass
class ScanResult:
    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per file or folder that was skipped


def checkpoint_dirs(settings: Settings) -> list[Path]:
    """``models/checkpoints`` and the folders of ``SDSTUDIO_CHECKPOINTS_DIR`` (os.pathsep-separated)."""
    return folders(DEFAULT_DIR, settings.checkpoints_dir)


def vae_dirs(settings: Settings) -> list[Path]:
    """``models/vae`` and the folders of ``SDSTUDIO_VAE_DIR`` (os.pathsep-separated)."""
    return folders(DEFAULT_VAE_DIR, settings.vae_dir)


def folders(default: Path, extra: str) -> list[Path]:
    dirs = [default]
    for part in extra.split(os.pathsep):
        if part.strip():
            path = Path(part.strip()).expanduser()
            dirs.append(path if path.is_absolute() else PROJECT_ROOT / path)
    unique: list[Path] = []
    for path in dirs:
        if path not in unique:
            unique.append(path)
    return unique


class Shape:
    """What ``infer_diffusers_model_type`` reads of a tensor: its shape (from the header, no data read)."""

    def __init__(self, shape: list[int]):
        self.shape = tuple(shape)


def read_header(path: Path) -> dict[str, Shape]:
    """Tensor names → shapes of a safetensors file, refusing files that are not complete safetensors."""
    import json
    import struct

    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(size - 8, 100_000_000):
                raise ValueError("header length")
            header = json.loads(f.read(length))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path.name}: not a safetensors file ({err.__class__.__name__}); it may be another format renamed to "
            ".safetensors. Re-download it or remove it from the folder."
        ) from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + length + end > size:
        raise CheckpointError(
            f"{path.name}: the file is truncated ({size} bytes, its header needs {8 + length + end}); the download "
            "probably stopped early. Download it again."
        )
    return {name: Shape(t["shape"]) for name, t in header.items()}


def sidecar_prediction(path: Path) -> str | None:
    """The prediction type an A1111 ``name.yaml`` sidecar states (``parameterization: "v"``), if there is one."""
    yaml = path.with_suffix(".yaml")
    if not yaml.exists():
        return None
    text = yaml.read_text(encoding="utf-8", errors="replace")
    return "v_prediction" if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.M) else "epsilon"


def detect(path: Path) -> Checkpoint:
    """The family of a single-file checkpoint, read from its tensors."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    tensors = read_header(path)
    if not tensors:
        raise CheckpointError(f"{path.name}: the file holds no tensors")
    if is_lora(tensors):
        raise CheckpointError(
            f"{path.name}: this is a LoRA, not a checkpoint; it needs a base model. Move it out of the checkpoints "
            "folder."
        )
    dit = dit_checkpoint(path, tensors)
    if dit is not None:
        return dit
    if not any(key.startswith(UNET_PREFIX) for key in tensors):
        raise CheckpointError(
            f"{path.name}: not a Stable Diffusion checkpoint (no {UNET_PREFIX}* weights; a VAE, ControlNet or "
            f"another kind of model?). Only {families.labels()} checkpoints go in this folder."
        )
    try:
        model_type = infer_diffusers_model_type(tensors)
    except (KeyError, IndexError):  # a branch looked for a tensor this file lacks: not an architecture we know
        model_type = "unknown"
    found = families.for_model_type(model_type)
    if found is None:
        raise CheckpointError(
            f"{path.name}: a {model_type} model, which SD Studio does not run; it runs {families.labels()} "
            "checkpoints."
        )
    if found[0].name in dit_keys.FAMILIES:  # dit_checkpoint found no complete FLUX / SD3 / Chroma transformer in it
        marker = dit_keys.MARKERS["flux" if found[0].name == "chroma" else found[0].name]  # Chroma's blocks are FLUX's
        raise CheckpointError(
            f"{path.name}: looks like a {model_type} model but lacks {marker}; an "
            "incomplete file or another layout, which SD Studio does not run. Download it again."
        )
    return checkpoint_of(path, *found)


# Where an all-in-one ComfyUI / Forge FLUX or SD3 checkpoint keeps each part besides the transformer.
DIT_PARTS = {
    "clip_l": ("text_encoders.clip_l.transformer.",),
    "clip_g": ("text_encoders.clip_g.transformer.",),
    "t5xxl": ("text_encoders.t5xxl.transformer.",),
    "vae": ("first_stage_model.", "vae."),
}


def dit_checkpoint(path: Path, tensors: dict[str, Shape]) -> Checkpoint | None:
    """A FLUX / SD3 / Chroma file (original key layout, all-in-one or transformer only), None for any other."""
    found = dit_keys.identify(dit_keys.strip_prefix(tensors))
    if found is None:
        return None
    model_type, label = found
    claimed = families.for_model_type(model_type)
    if claimed is None:
        raise CheckpointError(f"{path.name}: a {label} model, which SD Studio does not run from a single file")
    family = claimed[0]
    holds = tuple(part for part, prefixes in DIT_PARTS.items() if any(k.startswith(prefixes) for k in tensors))
    config = f"{family.name}-schnell" if model_type == "flux-schnell" else family.name
    return Checkpoint(path.stem, path, family.name, False, family.default_prediction, label, config, holds)


def checkpoint_of(path: Path, family: families.Family, inpainting: bool) -> Checkpoint:
    """A checkpoint file of ``family``, with the prediction type its family gives single files.

    Where a family's files do not say whether they predict eps or v (SD 2.x), an A1111 ``name.yaml`` sidecar decides,
    else the family's default (like diffusers, SD 2.x assumes the 768-v model).
    """
    prediction = family.default_prediction
    if family.prediction_varies:
        prediction = sidecar_prediction(path) or prediction
    return Checkpoint(path.stem, path, family.name, inpainting, prediction)


def scan_vaes(dirs: list[Path]) -> tuple[dict[str, Path], list[str]]:
    """Every usable ``.safetensors`` VAE in ``dirs`` by file name without extension, and why others were skipped."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for folder in dirs:
        if not folder.is_dir():
            if folder != DEFAULT_VAE_DIR:
                problems.append(f"VAE folder {folder} does not exist (SDSTUDIO_VAE_DIR)")
            continue
        for path in sorted(folder.glob("*.safetensors")):
            try:
                tensors = read_header(path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if not any(key in tensors for key in VAE_KEYS):
                problems.append(f"{path.name}: not a VAE (no decoder weights in the original layout); skipped")
            elif path.stem not in found:
                found[path.stem] = path
    return found, problems


def scan(dirs: list[Path], allow_pickle: bool = False) -> ScanResult:
    """Every usable checkpoint in ``dirs`` (first folder wins on a name clash) and why the others were skipped."""
    result = ScanResult()
    seen: dict[str, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            if folder != DEFAULT_DIR:
                result.problems.append(f"checkpoint folder {folder} does not exist (SDSTUDIO_CHECKPOINTS_DIR)")
            continue
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES:
                if not allow_pickle:
                    result.problems.append(
                        f"{path.name}: refused, a pickle file ({suffix}) can run code when it is opened. Convert it "
                        "to .safetensors (e.g. with the A1111 or ComfyUI converters), or let the server owner opt "
                        "in with SDSTUDIO_ALLOW_PICKLE=1 (unsafe)."
                    )
                    continue
                log.warning("loading pickle checkpoint %s because SDSTUDIO_ALLOW_PICKLE=1", path)
            elif suffix != SAFE_SUFFIX or not path.is_file():
                continue
            if path.stem in seen:
                result.problems.append(f"{path.name}: skipped, {seen[path.stem]} has the same name")
                continue
            try:
                checkpoint = detect_pickle(path) if suffix in PICKLE_SUFFIXES else detect(path)
            except CheckpointError as err:
                result.problems.append(str(err))
                continue
            except OSError as err:
                result.problems.append(f"{path.name}: could not be read ({err.strerror or err})")
                continue
            seen[path.stem] = path
            result.checkpoints.append(checkpoint)
    for problem in result.problems:
        log.warning("checkpoints: %s", problem)
    return result


def detect_pickle(path: Path) -> Checkpoint:
    """A pickle checkpoint the server owner allowed: loaded (it has no header) and detected the same way."""
    import torch
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path.name}: could not be unpickled ({err})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else {}
    if not any(str(key).startswith(UNET_PREFIX) for key in state):
        raise CheckpointError(f"{path.name}: not a Stable Diffusion checkpoint")
    model_type = infer_diffusers_model_type(state)
    found = families.for_model_type(model_type)
    if found is None:
        raise CheckpointError(f"{path.name}: a {model_type} model, which SD Studio does not run")
    return checkpoint_of(path, *found)


def pair_inpainting(checkpoints: list[Checkpoint]) -> tuple[list[Checkpoint], dict[str, Checkpoint]]:
    """Base checkpoints to list, and for each base name its ``name-inpainting`` partner of the same family.

    A paired inpainting file is not listed on its own (its base model uses it in the inpaint tab); an unpaired one is.
    """
    by_name = {c.name: c for c in checkpoints}
    partners: dict[str, Checkpoint] = {}
    for c in checkpoints:
        if c.inpainting:
            base = by_name.get(INPAINT_SUFFIX.sub("", c.name))
            if base is not None and not base.inpainting and base.family == c.family:
                partners[base.name] = c
    paired = {c.name for c in partners.values()}
    return [c for c in checkpoints if c.name not in paired], partners


SHARED_VOCABULARY = PROJECT_ROOT / "backend" / "configs" / "clip"  # CLIP's BPE files, the same for every family
SHARED_T5_DIR = PROJECT_ROOT / "backend" / "configs" / "t5"  # T5's SentencePiece vocabulary (FLUX, SD3)
SHARED_T5 = ("spiece.model", "tokenizer.json")


def config_dir(settings: Settings, family: str) -> Path:
    """The config folder (configs and tokenizers, no weights) ``from_single_file`` reads for ``family``.

    The shipped folders hold JSON only; CLIP's vocabulary and T5's SentencePiece model are shipped once and copied
    into each tokenizer folder of a working copy in the cache, so every family reads a complete folder. A variant
    name (``flux-schnell``) is its family's folder with the variant's files (its scheduler) laid over it.
    """
    import shutil

    base = family.split("-", 1)[0]
    source = settings.checkpoint_configs / base
    if not source.is_dir():
        return source  # the loader says which folder is missing
    target = settings.cache_dir / "checkpoint-configs" / family
    shutil.copytree(source, target, dirs_exist_ok=True)
    if family != base and (settings.checkpoint_configs / family).is_dir():
        shutil.copytree(settings.checkpoint_configs / family, target, dirs_exist_ok=True)
    for tokenizer in target.glob("tokenizer*"):
        config = tokenizer / "tokenizer_config.json"
        is_t5 = config.exists() and "T5Tokenizer" in config.read_text(encoding="utf-8")
        if is_t5 and not any((tokenizer / name).exists() for name in SHARED_T5):
            for name in SHARED_T5:
                shutil.copyfile(SHARED_T5_DIR / name, tokenizer / name)
        for name in () if is_t5 else ("vocab.json", "merges.txt"):
            if not (tokenizer / name).exists():
                shutil.copyfile(SHARED_VOCABULARY / name, tokenizer / name)
    return target
