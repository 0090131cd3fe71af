"""FLUX, SD3 and Chroma single files: transformer-only files, their text encoders and VAE, and loading them offline.

ComfyUI and Forge users keep a FLUX / SD3 / Chroma transformer alone (``models/unet``, ``models/diffusion_models``:
original BFL / SAI key names, ``.safetensors`` in bf16/fp16/fp8 or a ``.gguf`` quantization as city96's conversions)
and its text encoders (``clip_l``, ``clip_g``, ``t5xxl*``; Chroma takes T5 alone) in ``models/text_encoders`` or
``models/clip``, the VAE (``ae.safetensors``, the SD3 VAE) in ``models/vae``. All-in-one checkpoints
(``models/checkpoints``) hold every part under ComfyUI's prefixes. Detection reads headers only
(``checkpoints.dit_checkpoint``); a file lacking a part is paired with the first file of that kind in the folders (by
name), and is skipped with a message naming the folder and files when there is none. Loading builds each module from
the family's config folder: the transformer's config is derived from its shapes (``dit_keys``), fp8 weights are
upcast to the compute dtype, and GGUF weights stay quantized through diffusers' ``GGUFQuantizationConfig``
(dequantized per layer at compute time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from backend.models import dit_keys
from backend.models.checkpoints import (
    DIT_PARTS,
    Checkpoint,
    CheckpointError,
    ScanResult,
    Shape,
    dit_checkpoint,
    folders,
    is_lora,
    read_header,
)
from backend.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

DEFAULT_UNET_DIRS = (PROJECT_ROOT / "models" / "unet", PROJECT_ROOT / "models" / "diffusion_models")
DEFAULT_TEXT_ENCODER_DIRS = (PROJECT_ROOT / "models" / "text_encoders", PROJECT_ROOT / "models" / "clip")
SUFFIXES = (".safetensors", ".gguf")
# What each family's pipeline needs besides the transformer; SD3 runs without T5 (as sd3_medium_incl_clips does).
NEEDS = {"flux": ("clip_l", "t5xxl", "vae"), "sd3": ("clip_l", "clip_g", "vae"), "chroma": ("t5xxl", "vae")}
OPTIONAL = {"flux": (), "sd3": ("t5xxl",), "chroma": ()}
EXAMPLES = {"clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors", "t5xxl": "t5xxl_fp16.safetensors",
            "vae": "ae.safetensors (FLUX) or the SD3 VAE", "chroma vae": "ae.safetensors (FLUX's VAE)"}
CLIP_KEY = "text_model.encoder.layers.0.self_attn.q_proj.weight"
T5_KEY = "encoder.block.0.layer.0.SelfAttention.q.weight"


def unet_dirs(settings: Settings) -> list[Path]:
    """``models/unet``, ``models/diffusion_models`` and the folders of ``SDSTUDIO_UNET_DIR``."""
    return [*DEFAULT_UNET_DIRS[:1], *folders(DEFAULT_UNET_DIRS[1], settings.unet_dir)]


def text_encoder_dirs(settings: Settings) -> list[Path]:
    """``models/text_encoders``, ``models/clip`` and the folders of ``SDSTUDIO_TEXT_ENCODER_DIR``."""
    return [*DEFAULT_TEXT_ENCODER_DIRS[:1], *folders(DEFAULT_TEXT_ENCODER_DIRS[1], settings.text_encoder_dir)]


def read_gguf_header(path: Path) -> dict[str, Shape]:
    """Tensor names → shapes (torch order) of a GGUF file; the reader maps the file, no weights are read."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as err:
        raise CheckpointError(
            f"{path.name}: not a complete GGUF file ({err.__class__.__name__}: {err}); the download may have stopped "
            "early. Download it again."
        ) from None
    return {t.name: Shape([int(n) for n in reversed(t.shape.tolist())]) for t in reader.tensors}


def header(path: Path) -> dict[str, Shape]:
    return read_gguf_header(path) if path.suffix.lower() == ".gguf" else read_header(path)


def describe(path: Path, tensors: dict[str, Shape]) -> str:
    """What a file that is no FLUX / SD3 transformer looks like, for the scan's message."""
    keys = list(tensors)
    if is_lora(keys):
        return "a LoRA (it goes in models/loras)"
    if any(k.endswith("decoder.conv_in.weight") for k in keys) and not any("diffusion_model" in k for k in keys):
        return "a VAE (it goes in models/vae)"
    if any(CLIP_KEY in k or T5_KEY in k for k in keys):
        return "a text encoder (it goes in models/text_encoders)"
    if any(k.startswith("model.diffusion_model.input_blocks.") for k in keys):
        return "an SD 1.x/2.x/SDXL checkpoint (it goes in models/checkpoints)"
    return f"not a FLUX or SD3 transformer (unknown tensors such as {keys[0] if keys else 'none'})"


def scan_transformers(dirs: list[Path]) -> ScanResult:
    """Every FLUX / SD3 / Chroma transformer file (.safetensors, .gguf) in the UNet folders, and why others were
    skipped."""
    result = ScanResult()
    seen: set[str] = set()
    for folder in dirs:
        if not folder.is_dir():
            if folder not in DEFAULT_UNET_DIRS:
                result.problems.append(f"UNet folder {folder} does not exist (SDSTUDIO_UNET_DIR)")
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in SUFFIXES or not path.is_file() or path.stem in seen:
                continue
            try:
                tensors = header(path)
                found = dit_checkpoint(path, tensors)
            except CheckpointError as err:
                result.problems.append(str(err))
                continue
            except OSError as err:
                result.problems.append(f"{path.name}: could not be read ({err.strerror or err})")
                continue
            if found is None:
                result.problems.append(f"{path.name}: {describe(path, tensors)}; skipped")
                continue
            seen.add(path.stem)
            result.checkpoints.append(found)
    return result


@dataclass(frozen=True)
class Part:
    """A text encoder or VAE file: its kind, width (CLIP / T5 hidden size, VAE latent channels) and whether a CLIP
    has the projection SD3 pools with."""

    path: Path
    kind: str
    width: int
    projection: bool = False


def text_encoder_part(path: Path, tensors: dict[str, Shape]) -> Part | None:
    """A ``clip_l``, ``clip_g`` or ``t5xxl`` file (the file name tells the CLIPs apart, else the width)."""
    t5 = next((k for k in tensors if k.endswith(T5_KEY)), None)
    if t5 is not None:
        return Part(path, "t5xxl", tensors[t5].shape[1])
    clip = next((k for k in tensors if k.endswith(CLIP_KEY)), None)
    if clip is None:
        return None
    name, width = path.stem.lower(), tensors[clip].shape[0]
    kind = "clip_g" if "clip_g" in name or "clip-g" in name or (width == 1280 and "clip_l" not in name) else "clip_l"
    return Part(path, kind, width, any(k.endswith("text_projection.weight") for k in tensors))


def scan_parts(te_dirs: list[Path], vaes: dict[str, Path]) -> tuple[dict[str, list[Part]], list[str]]:
    """Text encoder files by kind (sorted by name) and 16-channel VAEs (the FLUX / SD3 latent), and problems."""
    found: dict[str, list[Part]] = {"clip_l": [], "clip_g": [], "t5xxl": [], "vae": []}
    problems: list[str] = []
    for folder in te_dirs:
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            try:
                part = text_encoder_part(path, read_header(path))
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if part is None:
                problems.append(f"{path.name}: not a CLIP or T5 text encoder; skipped")
            else:
                found[part.kind].append(part)
    for _, path in sorted(vaes.items()):
        try:
            conv = next(s for k, s in read_header(path).items() if k.endswith("decoder.conv_in.weight"))
        except (CheckpointError, StopIteration, OSError):
            continue
        if len(conv.shape) == 4 and conv.shape[1] == 16:  # a malformed file is no FLUX / SD3 VAE, not a crash
            found["vae"].append(Part(path, "vae", 16))
    return found, problems


# Words of a VAE file name that say its family; Chroma decodes with FLUX's VAE.
VAE_NAMES = {"flux": ("flux",), "sd3": ("sd3", "sd_3", "sd35"), "chroma": ("flux", "chroma")}


def fits(family: str, part: Part, transformer: dict[str, Shape]) -> bool:
    """Whether a part file fits the transformer: T5's width is its text input, FLUX's CLIP-L width its pooled input,
    SD3's CLIPs pool through their projections."""
    if part.kind == "t5xxl":
        key = "context_embedder.weight" if family == "sd3" else "txt_in.weight"
        return key not in transformer or part.width == transformer[key].shape[1]
    if part.kind == "vae":
        return True
    if family == "sd3":
        return part.projection
    pooled = transformer.get("vector_in.in_layer.weight")
    return pooled is None or part.width == pooled.shape[1]


def _preferred(family: str, kind: str, parts: list[Part]) -> Part:
    """The first file of a kind; for the VAE, the first whose name says the family (FLUX's ae.safetensors and the
    SD3 VAE have the same shapes but differ in weights and scaling)."""
    if kind == "vae":
        named = [p for p in parts if (family != "sd3" and p.path.stem.lower() == "ae")  # BFL's name for it
                 or any(n in p.path.stem.lower() for n in VAE_NAMES[family])]
        return (named or parts)[0]
    return parts[0]


def pair(checkpoints: list[Checkpoint], parts: dict[str, list[Part]]) -> tuple[list[Checkpoint], list[str]]:
    """Each FLUX / SD3 / Chroma file with the files of the parts it lacks; a file missing a needed part is skipped."""
    paired: list[Checkpoint] = []
    problems: list[str] = []
    for c in checkpoints:
        if not c.variant or c.family not in NEEDS:
            paired.append(c)
            continue
        transformer = dit_keys.strip_prefix(header(c.path))
        lacking = [p for p in (*NEEDS[c.family], *OPTIONAL[c.family]) if p not in c.holds]
        usable = {p: [f for f in parts.get(p, []) if fits(c.family, f, transformer)] for p in lacking}
        chosen = {p: _preferred(c.family, p, files).path for p, files in usable.items() if files}
        missing = [p for p in NEEDS[c.family] if p not in c.holds and p not in chosen]
        if missing:
            names = ", ".join(EXAMPLES.get(f"{c.family} {p}", EXAMPLES[p]) for p in missing)
            where = "models/vae" if missing == ["vae"] else "models/text_encoders (or models/clip)"
            unfit = [f.path.name for p in missing for f in parts.get(p, [])]
            problems.append(
                f"{c.path.name}: a {c.variant} transformer without {', '.join(missing)}; put {names} in {where}"
                + (" and the VAE in models/vae" if "vae" in missing and where != "models/vae" else "")
                + ", then press Refresh"
                + (f" ({', '.join(unfit)} do not fit it)" if unfit else "")
            )
            continue
        paired.append(replace(c, parts=tuple((p, str(path)) for p, path in chosen.items())))
    return paired, problems


def _upcast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 (and any other float) weights in the compute dtype: torch computes no float8 matmul on most devices."""
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def read_tensors(path: Path, prefixes: tuple[str, ...], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A file's tensors under the first of ``prefixes`` it has ("" = all), prefix removed, in ``dtype``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        prefix = next((p for p in prefixes if any(k.startswith(p) for k in keys)), "")
        state = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
    return {k: _upcast(v, dtype) for k, v in unscale(state).items()}


def unscale(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's "scaled fp8" files (``*_fp8_scaled``) store each fp8 matrix divided by its ``.scale_weight``: the
    real weight is their product. The ``scaled_fp8`` marker and input scales are not weights."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        scale = state.get(key.removesuffix(".weight") + ".scale_weight") if key.endswith(".weight") else None
        out[key] = value.float() * scale.float() if scale is not None else value
    return out


def _transformer_state(path: Path, family: str, dtype: torch.dtype) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(diffusers state dict, original-layout state for the config, quantized?) of the file's transformer."""
    if path.suffix.lower() == ".gguf":
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        state = dit_keys.strip_prefix(load_gguf_checkpoint(str(path)))
        shapes = {k: Shape(list(getattr(v, "quant_shape", v.shape))) for k, v in state.items()}
        state = {k: v if hasattr(v, "quant_type") else _upcast(v, dtype) for k, v in state.items()}
        return dit_keys.to_diffusers(family, state), shapes, True
    state = dit_keys.strip_prefix(read_tensors(path, (dit_keys.PREFIX, ""), dtype))
    return dit_keys.to_diffusers(family, state), state, False


TRANSFORMERS = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel",
                "chroma": "ChromaTransformer2DModel"}


def load_transformer(path: Path, family: str, config: str, dtype: torch.dtype, quantizer: Any = None) -> Any:
    """The file's transformer, its config read from the shapes over the family's config folder; ``quantizer``: the
    memory plan's ``quantization_config`` (8-bit), never applied to a GGUF file (already quantized)."""
    import diffusers

    cls = getattr(diffusers, TRANSFORMERS[family])
    converted, shapes, quantized = _transformer_state(path, family, dtype)
    head_dim = cls.load_config(config, subfolder="transformer", local_files_only=True)["attention_head_dim"]
    derived = dit_keys.transformer_config(family, shapes, head_dim)
    extra: dict[str, Any] = {}
    if quantized:
        extra["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    elif quantizer is not None:
        extra["quantization_config"] = quantizer
    return cls.from_single_file(
        converted, config=config, subfolder="transformer", dtype=dtype, local_files_only=True, **derived, **extra
    )


def _model_key(key: str, expected: set[str]) -> str:
    """A file's CLIP key as the model names it: ComfyUI's files keep ``text_model.``, transformers 5.6+ flattened
    CLIPTextModel drops it."""
    if key in expected:
        return key
    other = key.removeprefix("text_model.") if key.startswith("text_model.") else "text_model." + key
    return other if other in expected else key


def load_text_encoder(path: Path, part: str, config: Path, cls_name: str, dtype: torch.dtype) -> Any:
    """A CLIP / T5 encoder from a ComfyUI-layout file (or an all-in-one's prefix), with the config folder's config."""
    import transformers
    from accelerate import init_empty_weights

    cls = getattr(transformers, cls_name)
    state = read_tensors(path, DIT_PARTS[part], dtype)
    with init_empty_weights():
        model = cls(cls.config_class.from_pretrained(config))
    expected = set(model.state_dict())
    state = {_model_key(k, expected): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {"encoder.embed_tokens.weight", "text_model.embeddings.position_ids"}
    # ComfyUI's clip_l carries the projection SD3 uses; FLUX's CLIP-L has none and leaves it out.
    ignored = ("position_ids", "text_projection.weight")
    if set(missing) - tied or [k for k in unexpected if not k.endswith(ignored)]:
        raise ValueError(
            f"{path.name} is not the {part} text encoder {config.name} expects (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    if "shared.weight" in state:
        model.encoder.embed_tokens = model.shared  # T5 ties its input embedding to the shared one
    return model.to(dtype).eval()


def load_vae(path: Path, config: str, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    state = read_tensors(path, DIT_PARTS["vae"], dtype)
    return AutoencoderKL.from_single_file(state, config=config, subfolder="vae", dtype=dtype, local_files_only=True)


# family → (pipeline class, [(pipeline component, part, transformers class, config subfolder)])
ENCODERS = {
    "chroma": ("ChromaPipeline", [("text_encoder", "t5xxl", "T5EncoderModel")]),
    "flux": ("FluxPipeline", [("text_encoder", "clip_l", "CLIPTextModel"),
                              ("text_encoder_2", "t5xxl", "T5EncoderModel")]),
    "sd3": ("StableDiffusion3Pipeline", [("text_encoder", "clip_l", "CLIPTextModelWithProjection"),
                                         ("text_encoder_2", "clip_g", "CLIPTextModelWithProjection"),
                                         ("text_encoder_3", "t5xxl", "T5EncoderModel")]),
}


def load_pipeline(
    source: str, family: str, config: str, parts: dict[str, str], dtype: torch.dtype, quantizer: Any = None
) -> Any:
    """The text2img pipeline of a FLUX / SD3 / Chroma single file: its own parts, the paired files for the others
    (``quantizer``: the transformer's 8-bit ``quantization_config``, or None)."""
    import diffusers

    path = Path(source)
    where = {part: Path(parts[part]) if part in parts else path for part in (*DIT_PARTS,)}
    tensors = header(path)
    holds = {p for p, prefixes in DIT_PARTS.items() if any(k.startswith(prefixes) for k in tensors)}
    pipeline_name, encoders = ENCODERS[family]
    components: dict[str, Any] = {"transformer": load_transformer(path, family, config, dtype, quantizer)}
    for component, part, cls_name in encoders:
        if part not in parts and part not in holds:  # SD3 without T5
            components[component] = None
            components["tokenizer_3"] = None
            continue
        folder = Path(config) / component
        components[component] = load_text_encoder(where[part], part, folder, cls_name, dtype)
    components["vae"] = load_vae(where["vae"], config, dtype)
    cls = getattr(diffusers, pipeline_name)
    log.info("%s: %s parts from %s", path.name, family, {p: Path(w).name for p, w in parts.items()} or "itself")
    return cls.from_pretrained(config, **components, dtype=dtype, local_files_only=True)
