"""LoRA and textual-inversion embeddings, named in the prompt as in A1111.

``<lora:name:0.8>`` applies ``name.safetensors`` from the LoRA folders with weight 0.8 (``<lora:name>`` = 1;
``<lora:name:te:unet>`` gives the text encoder and the UNet their own weights, as A1111 does). The tags are taken out
of the text before it is encoded and stay in the prompt the infotext records. An embedding is used by its file
name as a word of either prompt (``embedding:name`` also works, ComfyUI's form, and insists the file exists).

Loading is diffusers' own: ``load_lora_weights`` (Kohya/A1111 keys are converted by diffusers, adapters live in
peft) and ``set_adapters``. The same goes for the DiT families: FluxPipeline's (and Chroma's, the same loader) and
StableDiffusion3Pipeline's ``load_lora_weights`` convert Kohya, XLabs, ComfyUI, BFL control and diffusers files into
the transformer (the "unet" weight of a tag applies to it) and the CLIP text encoders. One layout diffusers passes
by: FLUX / Chroma LoRAs in the original key names with PEFT's ``lora_A`` / ``lora_B`` (ai-toolkit's, the Chroma
trainers'): it matches nothing and diffusers only warns, so they are renamed to ComfyUI's ``lora_down`` / ``lora_up``
form first (``bfl_as_comfyui``). A LoRA that matched no weight of the model is refused, naming the file.
Embeddings: ``load_textual_inversion``
(``backend.generation.embeddings``: SD 1.x/2.x and SDXL files).
Adapters stay loaded in the model (a cache: the next run with the same LoRA loads nothing) and are disabled when the
prompt no longer names them, so the model computes exactly what it computed before any LoRA was loaded. Embeddings
stay loaded too: a token no prompt names changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from backend.generation import embeddings
from backend.models.checkpoints import PROJECT_ROOT, CheckpointError, folders, is_lora, read_header
from backend.schema.errors import ValidationError
from backend.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LORA_DIR = PROJECT_ROOT / "models" / "loras"
DEFAULT_EMBEDDING_DIR = PROJECT_ROOT / "models" / "embeddings"
SUFFIX = ".safetensors"
# The pipeline parts a LoRA can live in: the denoiser (a UNet, or a DiT's transformer) and the text encoders.
DENOISERS = ("unet", "transformer")
PARTS = (*DENOISERS, "text_encoder", "text_encoder_2", "text_encoder_3")
MAX_CACHED_ADAPTERS = 8  # LoRAs kept loaded per model beyond those a run uses (each costs its own weights)
# FLUX / Chroma original (BFL) key names with PEFT's lora_A / lora_B, "diffusion_model." prefix or none.
BFL_PEFT_KEY = re.compile(r"^(diffusion_model\.)?(double_blocks|single_blocks)\.\d+\..+\.lora_[AB]\.weight$")
# XLabs' FLUX LoRAs name their matrices after the attention processor (double_blocks.0.processor.qkv_lora1.down.weight).
LORA_TAG = re.compile(r"<lora:([^:<>]+)((?::[^:<>]*){0,2})>", re.IGNORECASE)
EMBEDDING_REF = re.compile(r"\bembedding:([\w.\-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class LoraTag:
    name: str
    text_encoder: float = 1.0
    unet: float = 1.0


@dataclass
class Applied:
    """What the pipeline encodes (tags removed, ``embedding:`` prefixes dropped) and the infotext's entries."""

    prompt: str
    negative_prompt: str
    infotext: dict[str, str] = field(default_factory=dict)


def lora_dirs(settings: Settings) -> list[Path]:
    """``models/loras`` and the folders of ``SDSTUDIO_LORA_DIRS`` (os.pathsep-separated)."""
    return folders(DEFAULT_LORA_DIR, settings.lora_dirs)


def embedding_dirs(settings: Settings) -> list[Path]:
    """``models/embeddings`` and the folders of ``SDSTUDIO_EMBEDDING_DIRS`` (os.pathsep-separated)."""
    return folders(DEFAULT_EMBEDDING_DIR, settings.embedding_dirs)


def parse_lora_tags(text: str) -> tuple[str, list[LoraTag]]:
    """The text without its ``<lora:…>`` tags, and the tags in order (a LoRA named twice: its last tag counts)."""
    tags: dict[str, LoraTag] = {}
    for match in LORA_TAG.finditer(text):
        name = match.group(1).strip()
        numbers = [part.strip() for part in match.group(2).split(":")[1:]]
        try:
            weights = [float(number) for number in numbers if number]
        except ValueError:
            raise ValidationError(
                "prompt", f"{match.group(0)}: the weight must be a number, e.g. <lora:{name}:0.8>"
            ) from None
        te = weights[0] if weights else 1.0
        tags.pop(name, None)
        tags[name] = LoraTag(name, te, weights[1] if len(weights) > 1 else te)
    return LORA_TAG.sub("", text), list(tags.values())


def strip_tags(text: str) -> str:
    """The text the text encoder sees (for token counts): tags out, ``embedding:`` prefixes off."""
    return EMBEDDING_REF.sub(r"\1", LORA_TAG.sub("", text))


def insert_tag(prompt: str, kind: str, name: str) -> str:
    """The prompt with a LoRA's tag (``<lora:name:1>``) or an embedding's name appended after a comma (the picker)."""
    addition = f"<lora:{name}:1>" if kind == "lora" else name
    text = prompt.rstrip()
    if not text:
        return addition
    return f"{text}{'' if text.endswith(',') else ','} {addition}"


def _scan(dirs: list[Path]) -> dict[str, Path]:
    """Name (file name without .safetensors) → file, subfolders included (A1111 folders are often sorted so);
    the first folder listed wins a name found twice."""
    found: dict[str, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(f"*{SUFFIX}")):
            found.setdefault(path.stem, path)
    return found


def _file_hash(path: Path, skip_header: bool) -> str:
    """A1111's short hash: the first 12 hex digits of a SHA-256. For LoRAs it is Kohya's ("addnet") hash, of the
    tensor data after the safetensors header, so editing a file's metadata keeps it; embeddings hash the file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if skip_header:
            length = int.from_bytes(f.read(8), "little")
            f.seek(8 + length)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _quote_name(name: str) -> str:
    return name.replace(":", "").replace(",", "")  # as A1111 writes names into its hash lists


class Networks:
    """The LoRA and embedding files in the configured folders, and applying them to a pipeline."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.lora_dirs = lora_dirs(settings)
        self.embedding_dirs = embedding_dirs(settings)
        self.loras: dict[str, Path] = {}
        self.embeddings: dict[str, Path] = {}
        self._hashes: dict[tuple[Path, int, int], str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Scan the folders again (the Refresh button)."""
        self.loras = _scan(self.lora_dirs)
        self.embeddings = _scan(self.embedding_dirs)

    def lora_list(self) -> list[dict[str, Any]]:
        """A1111's ``/sdapi/v1/loras`` entries (the path is the file's, relative to its folder)."""
        return [
            {"name": n, "alias": n, "path": self._relative(p, self.lora_dirs), "metadata": {}}
            for n, p in sorted(self.loras.items())
        ]

    def embedding_list(self) -> dict[str, dict[str, Any]]:
        """A1111's ``/sdapi/v1/embeddings`` "loaded" entries: vectors and their width, read from the file header."""
        listed: dict[str, dict[str, Any]] = {}
        for name, path in sorted(self.embeddings.items()):
            try:
                vectors, width = embeddings.listing(path)
            except (CheckpointError, OSError, StopIteration):
                continue
            listed[name] = {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": width,
                "vectors": vectors,
            }
        return listed

    @staticmethod
    def _relative(path: Path, dirs: list[Path]) -> str:
        for folder in dirs:
            if path.is_relative_to(folder):
                return str(path.relative_to(folder))
        return path.name

    def short_hash(self, path: Path, lora: bool) -> str:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = _file_hash(path, skip_header=lora)
        return self._hashes[key]

    # --- what a prompt names --------------------------------------------------------------------------------

    def lora_tags(self, prompt: str, negative: str) -> list[LoraTag]:
        """The LoRAs both prompts name, each checked to exist (else a ``ValidationError`` naming the folders)."""
        tags: dict[str, LoraTag] = {}
        for text in (prompt, negative):
            for tag in parse_lora_tags(text)[1]:
                tags[tag.name] = tag
        if any(not self._there(self.loras, name) for name in tags):
            self.refresh()  # a file dropped in (or moved) since the last scan is found without pressing Refresh
        for name in tags:
            if not self._there(self.loras, name):
                raise ValidationError("prompt", self._missing("LoRA", name, self.lora_dirs))
        return list(tags.values())

    def embedding_names(self, prompt: str, negative: str) -> list[str]:
        """Embeddings the prompts use: each file name found as a word, and each ``embedding:name`` (it must exist)."""
        text = f"{prompt}\n{negative}"
        named = [m.group(1) for m in EMBEDDING_REF.finditer(text)]
        if any(not self._there(self.embeddings, name) for name in named):
            self.refresh()
        for name in named:
            if not self._there(self.embeddings, name):
                raise ValidationError("prompt", self._missing("embedding", name, self.embedding_dirs))
        words = LORA_TAG.sub(" ", text)
        used = [name for name in self.embeddings if re.search(rf"(?<![\w\-]){re.escape(name)}(?![\w\-])", words)]
        if any(not self._there(self.embeddings, name) for name in used):
            self.refresh()  # a file gone since the last scan: its name is a plain word again
            used = [name for name in used if self._there(self.embeddings, name)]
        return sorted(set(named) | set(used))

    @staticmethod
    def _there(files: dict[str, Path], name: str) -> bool:
        return name in files and files[name].is_file()

    @staticmethod
    def _missing(kind: str, name: str, dirs: list[Path]) -> str:
        where = ", ".join(str(d) for d in dirs)
        return f"no {kind} named {name!r}: put {name}{SUFFIX} in {where} (or fix the name in the prompt)"

    def check(self, prompt: str, negative: str) -> None:
        """Refuse a request naming a LoRA or embedding that is not there, before any model is loaded."""
        self.lora_tags(prompt, negative)
        self.embedding_names(prompt, negative)

    # --- applying them --------------------------------------------------------------------------------------

    def apply(self, pipe: Any, prompt: str, negative: str) -> Applied:
        """Make ``pipe`` run with exactly the LoRAs and embeddings the prompts name (call under the run lock)."""
        tags = self.lora_tags(prompt, negative)
        named = self.embedding_names(prompt, negative)
        info: dict[str, str] = {}
        if tags or _adapters(pipe):
            info.update(self._set_loras(pipe, tags))
        if named:
            info["TI hashes"] = ", ".join(f"{_quote_name(name)}: {self._load_embedding(pipe, name)}" for name in named)
        return Applied(strip_tags(prompt), strip_tags(negative), info)

    def _set_loras(self, pipe: Any, tags: list[LoraTag]) -> dict[str, str]:
        if not tags:
            pipe.disable_lora()
            return {}
        if not hasattr(pipe, "load_lora_weights"):
            raise ValidationError("prompt", f"this model's pipeline ({type(pipe).__name__}) cannot use LoRAs")
        hashes = {tag.name: self.short_hash(self.loras[tag.name], lora=True) for tag in tags}
        names = [f"lora_{hashes[tag.name]}" for tag in tags]  # same file contents → same adapter, whatever its name
        self._evict(pipe, keep=set(names))
        for tag, adapter in zip(tags, names, strict=True):
            self._load_lora(pipe, tag.name, adapter)
        present = _adapters(pipe)
        weights = [
            {part: tag.text_encoder if part.startswith("text_encoder") else tag.unet for part in present[adapter]}
            for tag, adapter in zip(tags, names, strict=True)
        ]
        pipe.enable_lora()
        pipe.set_adapters(names, weights)
        return {"Lora hashes": ", ".join(f"{_quote_name(t.name)}: {hashes[t.name]}" for t in tags)}

    def _load_lora(self, pipe: Any, name: str, adapter: str) -> None:
        path = self.loras[name]
        parts = [part for part in PARTS if getattr(pipe, part, None) is not None]
        have = [part for part in parts if adapter in getattr(getattr(pipe, part), "peft_config", {})]
        if any(part in have for part in DENOISERS):
            return
        where = f"{path.name} ({path.parent})"
        try:
            keys = read_header(path)
        except (CheckpointError, OSError) as err:
            raise ValidationError("prompt", f"LoRA {name!r}: {err}") from None
        if not is_lora(keys):
            raise ValidationError(
                "prompt", f"{where} is not a LoRA (no LoRA weights in it); move it out of the LoRA folder"
            )
        log.info("loading LoRA %s from %s", name, path)
        try:
            # Its text-encoder half is already in a shared text encoder (an inpainting UNet of its own).
            if have and hasattr(pipe, "load_lora_into_unet"):
                state, alphas = pipe.lora_state_dict(str(path))
                pipe.load_lora_into_unet(state, network_alphas=alphas, unet=pipe.unet, adapter_name=adapter)
            else:
                pipe.load_lora_weights(bfl_as_comfyui(path, keys) or str(path), adapter_name=adapter)
        except (ValueError, KeyError, RuntimeError, OSError) as err:
            self._delete(pipe, adapter)  # a half-loaded adapter must not linger in the model
            raise ValidationError(
                "prompt", f"{where} cannot be used as a LoRA on this model ({type(err).__name__}: {err})"[:600]
            ) from None
        if adapter not in _adapters(pipe):  # diffusers only warns when no key matched: say it, never run without
            raise ValidationError(
                "prompt",
                f"{where}: none of its weights matched this model ({type(pipe).__name__}); it is a LoRA for another "
                f"model family (its keys look like {next(iter(keys), '')!r})",
            )

    def _evict(self, pipe: Any, keep: set[str]) -> None:
        """Keep at most ``MAX_CACHED_ADAPTERS`` LoRAs loaded: unload the oldest ones this run does not use."""
        loaded = list(_adapters(pipe))  # in the order they were loaded
        spare = [adapter for adapter in loaded if adapter not in keep]
        for adapter in spare[: max(0, len(set(loaded) | keep) - MAX_CACHED_ADAPTERS)]:
            self._delete(pipe, adapter)

    @staticmethod
    def _delete(pipe: Any, adapter: str) -> None:
        for part in PARTS:
            module = getattr(pipe, part, None)
            if module is not None and adapter in getattr(module, "peft_config", {}):
                if hasattr(module, "delete_adapters"):
                    module.delete_adapters(adapter)
                else:
                    module.delete_adapter(adapter)

    def _load_embedding(self, pipe: Any, name: str) -> str:
        path = self.embeddings[name]
        digest = self.short_hash(path, lora=False)
        if not embeddings.is_loaded(pipe, name):
            embeddings.load(pipe, name, path)
        return digest


def bfl_as_comfyui(path: Path, keys: Any) -> dict[str, Any] | None:
    """A FLUX / Chroma LoRA in the original key names with ``lora_A`` / ``lora_B`` renamed to ComfyUI's
    ``diffusion_model.*.lora_down`` / ``lora_up``, which diffusers' Kohya converter reads (None: another layout, read
    by diffusers as it is). BFL's control LoRAs (``query_norm.scale`` keys) have a converter of their own."""
    if not any(BFL_PEFT_KEY.match(key) for key in keys) or any("query_norm.scale" in key for key in keys):
        return None
    renamed = {}
    for key, value in load_file(str(path)).items():
        key = key if key.startswith("diffusion_model.") else f"diffusion_model.{key}"
        renamed[key.replace(".lora_A.weight", ".lora_down.weight").replace(".lora_B.weight", ".lora_up.weight")] = value
    return renamed


def _adapters(pipe: Any) -> dict[str, list[str]]:
    """Adapter name → the pipeline parts that hold it."""
    found: dict[str, list[str]] = {}
    for part in PARTS:
        module = getattr(pipe, part, None)
        for adapter in getattr(module, "peft_config", None) or {}:
            found.setdefault(adapter, []).append(part)
    return found
