"""Reading one model's weights: where a source is read from (hub cache, folder, file, built-in), its text2img
pipeline (a whole pipeline, an SD single file or a FLUX / SD3 / Chroma file in its parts), its inpainting UNet, its
ControlNets and VAE files. ``pipelines.PipelineCache`` decides when; this module only loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
from diffusers import (
    AutoencoderKL,
    AutoPipelineForText2Image,
    ControlNetModel,
    DiffusionPipeline,
    PipelineQuantizationConfig,
    UNet2DConditionModel,
)

from backend.families import family
from backend.models import dit_files, dit_keys, flux_fill, tiny, tiny_dit
from backend.models.checkpoints import config_dir
from backend.models.devices import DevicePlan, MemoryPlan, gpu_free_bytes, plan_memory, weight_sizes
from backend.models.quantize import torchao_config
from backend.models.registry import ModelSpec, local_path, source_kind
from backend.settings import Settings

log = logging.getLogger(__name__)

class ModelUnavailable(RuntimeError):
    """The model's weights cannot be loaded (offline and not cached, missing file, …)."""


def is_cached(repo_id: str, marker: str = "model_index.json") -> bool:
    """Whether a hub model is in the local hub cache (no network); ``marker`` is a file every copy has."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, marker)
    return isinstance(found, str)


# Built-in models: name → how to build it into a folder (once; later loads read the folder).
BUILTIN_MODELS: dict[str, Callable[[Path], Path]] = {
    "tiny": lambda path: tiny.ensure(path),
    "tiny-inpaint": lambda path: tiny.ensure(path, inpaint=True),
    "tiny-controlnet-canny": lambda path: tiny.ensure_controlnet(path, seed=1),
    "tiny-controlnet-depth": lambda path: tiny.ensure_controlnet(path, seed=2),
    "tiny-controlnet-pose": lambda path: tiny.ensure_controlnet(path, seed=3),
    "tiny-controlnet-inpaint": lambda path: tiny.ensure_controlnet(path, seed=4),
    **tiny_dit.BUILTINS,  # the tiny FLUX, SD3 and Chroma models and the FLUX/SD3 ControlNets
}


def resolve_source(name: str, source: str, settings: Settings, marker: str = "model_index.json") -> str:
    """Where ``from_pretrained``/``from_single_file`` should read ``source`` from (``name`` for messages).

    ``marker``: a file a hub copy has in the cache (a pipeline's model_index.json, a lone model's config.json).
    """
    kind = source_kind(source)
    if kind == "builtin":
        builtin = source.split(":", 1)[1]
        if builtin not in BUILTIN_MODELS:
            raise ModelUnavailable(f"{name}: unknown built-in model {builtin!r}")
        return str(BUILTIN_MODELS[builtin](settings.cache_dir / builtin))
    if kind in ("folder", "single_file"):
        path = local_path(source)
        if not path.exists():
            raise ModelUnavailable(f"{name}: {source} does not exist; fix its source in the models file")
        return str(path)
    if settings.offline and not is_cached(source, marker):
        raise ModelUnavailable(
            f"{name} ({source}) is not available offline: its weights are not in the local "
            "Hugging Face cache. Run once with network access to download it, or list a local folder "
            "or .safetensors file in presets/models.json."
        )
    return source


def memory_plan(spec: ModelSpec, source: str, settings: Settings, plan: DevicePlan,
                free_bytes: float | None = None) -> MemoryPlan | None:
    """The memory plan of a FLUX / SD3 / Chroma model before it loads (from its files' sizes): whether its
    transformer must load in 8 bits. None where no plan applies (not CUDA, ``--cpu-offload``, a UNet model)."""
    if plan.device != "cuda" or settings.cpu_offload or spec.family not in dit_keys.FAMILIES:
        return None
    sizes = weight_sizes(source if spec.kind != "hub" else spec.source, [file for _, file in spec.parts])
    return plan_memory(gpu_free_bytes() if free_bytes is None else free_bytes, sizes)


def load_pipeline(spec: ModelSpec, settings: Settings, plan: DevicePlan, quantize: bool | None = None) -> Any:
    """Load a model's text2img pipeline from the hub, a folder or a single checkpoint file.

    Its family says which pipeline class reads a single file and what else loading takes (SD 1.x/2.x: no safety
    checker). ``quantize``: load the transformer in 8 bits (None: as the memory plan says).
    """
    source = resolve_source(spec.name, spec.source, settings)
    model_family = family(spec.family)
    kwargs: dict[str, Any] = {"dtype": plan.dtype, **model_family.pretrained_kwargs}
    local_only = settings.offline or spec.kind != "hub"
    if quantize is None:
        memory = memory_plan(spec, source, settings, plan)
        quantize = bool(memory and memory.quantized)
        if memory:
            log.info("%s: memory plan before loading: %s", spec.name, memory.line())
    quantizer = torchao_config() if quantize else None
    try:
        if spec.kind == "single_file":
            cls = getattr(diffusers, model_family.single_file_pipeline)
            if not spec.config:
                return cls.from_single_file(source, local_files_only=local_only, **kwargs)
            if not Path(spec.config).is_dir():
                raise ModelUnavailable(f"{spec.name}: its config folder {spec.config} is missing")
            if spec.family in dit_keys.FAMILIES:  # FLUX / SD3: original layout, parts maybe in other files
                parts = dict(spec.parts)
                return dit_files.load_pipeline(source, spec.family, spec.config, parts, plan.dtype, quantizer)
            if spec.inpainting:  # a lone 9-channel file: the family's config describes the 4-channel UNet
                kwargs["unet"] = single_file_unet(source, spec.config, plan)
            # The shipped config folder holds every config and the tokenizer: nothing is fetched.
            pipe = cls.from_single_file(source, config=spec.config, local_files_only=True, **kwargs)
            if spec.prediction_type and pipe.scheduler.config.get("prediction_type") != spec.prediction_type:
                pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, prediction_type=spec.prediction_type)
            return pipe
        if quantizer is not None:
            kwargs["quantization_config"] = PipelineQuantizationConfig(quant_mapping={"transformer": quantizer})
        saved = DiffusionPipeline.load_config(source, local_files_only=local_only).get("_class_name", "")
        cls = getattr(diffusers, flux_fill.text2img_class(saved), AutoPipelineForText2Image)  # "": AutoPipeline's
        return cls.from_pretrained(source, use_safetensors=True, local_files_only=local_only, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        if isinstance(err, ModelUnavailable):
            raise
        hint = ""
        if spec.kind == "hub":
            hint = (
                " Check the network connection and the model id; without a network, pick a model from a local "
                "folder or the demo model (python app.py --offline)."
            )
        raise ModelUnavailable(f"{spec.name}: could not load {spec.source}: {err}.{hint}") from err


def single_file_unet(source: str, config: str, plan: DevicePlan) -> UNet2DConditionModel:
    """The 9-channel UNet of an inpainting checkpoint file, read with its family's config folder."""
    return UNet2DConditionModel.from_single_file(
        source, config=config, subfolder="unet", in_channels=9, dtype=plan.dtype, local_files_only=True
    )


def load_inpaint_unet(spec: ModelSpec, settings: Settings, plan: DevicePlan) -> UNet2DConditionModel:
    """The 9-channel UNet of a model's inpainting variant (text encoder and VAE stay shared)."""
    assert spec.inpaint
    source = resolve_source(spec.name, spec.inpaint, settings)
    if source_kind(spec.inpaint) == "single_file" and spec.config:
        try:
            return single_file_unet(source, spec.config, plan)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ModelUnavailable(f"{spec.name}: could not load its inpainting file {spec.inpaint}: {err}") from err
    local_only = settings.offline or source_kind(spec.inpaint) != "hub"
    # A whole pipeline (hub id or folder) keeps its UNet in unet/; a bare UNet folder has config.json on top.
    subfolder = None if (Path(source) / "config.json").exists() else "unet"
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder=subfolder, dtype=plan.dtype, use_safetensors=True, local_files_only=local_only
        )
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{spec.name}: could not load its inpainting UNet {spec.inpaint}: {err}") from err
    return unet


def load_controlnet(spec: ModelSpec, control_type: str, settings: Settings, plan: DevicePlan) -> ControlNetModel:
    """The model's ControlNet for ``control_type`` (a hub id, a diffusers folder or a built-in one)."""
    where = spec.controlnet(control_type)
    if where is None:
        raise ModelUnavailable(spec.missing_controlnet(control_type))
    source = resolve_source(f"{spec.name}'s {control_type} ControlNet", where, settings, marker="config.json")
    local_only = settings.offline or source_kind(where) != "hub"
    try:
        # The family's ControlNet class: FLUX's and SD3's are transformers (FluxControlNetModel, SD3ControlNetModel).
        cls = getattr(diffusers, family(spec.family).controlnet_model)
        return cls.from_pretrained(
            source, dtype=plan.dtype, use_safetensors=True, local_files_only=local_only
        )
    except (OSError, ValueError) as err:
        raise ModelUnavailable(
            f"{spec.name}: could not load its {control_type} ControlNet {where}: {err}. Without a network, list a "
            "local diffusers folder for it in presets/models.json."
        ) from err


def vae_config(spec: ModelSpec, settings: Settings) -> str:
    """The folder whose ``vae/config.json`` describes the model's VAE (for reading a VAE file in its layout)."""
    if spec.config:
        return spec.config
    if spec.kind in ("builtin", "folder"):
        return resolve_source(spec.name, spec.source, settings)
    return str(config_dir(settings, spec.family))


def load_vae(spec: ModelSpec, path: Path | None, settings: Settings, plan: DevicePlan) -> AutoencoderKL:
    """A VAE file (original layout) read with the model family's VAE config (on the CPU)."""
    if path is None or not Path(path).exists():
        raise ModelUnavailable(f"VAE file {path} is gone; press Refresh beside the model list")
    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=vae_config(spec, settings), subfolder="vae", dtype=plan.dtype, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelUnavailable(f"VAE {Path(path).name} does not fit {spec.name} ({spec.family}): {err}") from err
    return vae
