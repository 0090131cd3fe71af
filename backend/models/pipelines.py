"""The pipeline cache: load each model's weights once, derive every task pipeline from them.

Task pipelines (img2img, inpaint, ControlNet) are built with ``from_pipe`` from the text2img pipeline,
so they share its modules: no second copy of any weight. At most ``settings.max_models`` models stay
resident; the least recently used one is unloaded explicitly when another is loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    ControlNetModel,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.controlnets.controlnet import ControlNetOutput

from backend.families import family
from backend.models import dit_files, dit_keys, encoder_choice, flux_fill, openvino_unet, tiny, tiny_dit
from backend.models.checkpoints import config_dir
from backend.models.devices import DevicePlan, apply_memory_options, plan_device
from backend.models.nan_guard import guard_vae_nans
from backend.models.registry import ModelRegistry, ModelSpec, local_path, source_kind
from backend.settings import Settings

log = logging.getLogger(__name__)

TASK_PIPELINES: dict[str, Any] = {
    "txt2img": AutoPipelineForText2Image,
    "img2img": AutoPipelineForImage2Image,
    "inpaint": AutoPipelineForInpainting,
}


class ModelUnavailable(RuntimeError):
    """The model's weights cannot be loaded (offline and not cached, missing file, …)."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    base: DiffusionPipeline
    scheduler_config: dict[str, Any]
    memory_options: list[str] = field(default_factory=list)
    derived: dict[tuple[str, ...], DiffusionPipeline] = field(default_factory=dict)  # (task, *ControlNet sources)
    controlnets: dict[str, ControlNetModel] = field(default_factory=dict)  # source → model, loaded once
    vaes: dict[str, Any] = field(default_factory=dict)  # VAE name ("" = the model's own) → AutoencoderKL
    vae: str = ""  # the VAE its pipelines use now
    encoders: dict[str, Path] = field(default_factory=dict)  # text-encoder files chosen (encoder_choice; {} = paired)


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


def load_pipeline(spec: ModelSpec, settings: Settings, plan: DevicePlan) -> DiffusionPipeline:
    """Load a model's text2img pipeline from the hub, a folder or a single checkpoint file.

    Its family says which pipeline class reads a single file and what else loading takes (SD 1.x/2.x: no safety
    checker).
    """
    source = resolve_source(spec.name, spec.source, settings)
    model_family = family(spec.family)
    kwargs: dict[str, Any] = {"dtype": plan.dtype, **model_family.pretrained_kwargs}
    local_only = settings.offline or spec.kind != "hub"
    try:
        if spec.kind == "single_file":
            cls = getattr(diffusers, model_family.single_file_pipeline)
            if not spec.config:
                return cls.from_single_file(source, local_files_only=local_only, **kwargs)
            if not Path(spec.config).is_dir():
                raise ModelUnavailable(f"{spec.name}: its config folder {spec.config} is missing")
            if spec.family in dit_keys.FAMILIES:  # FLUX / SD3: original layout, parts maybe in other files
                return dit_files.load_pipeline(source, spec.family, spec.config, dict(spec.parts), plan.dtype)
            if spec.inpainting:  # a lone 9-channel file: the family's config describes the 4-channel UNet
                kwargs["unet"] = single_file_unet(source, spec.config, plan)
            # The shipped config folder holds every config and the tokenizer: nothing is fetched.
            pipe = cls.from_single_file(source, config=spec.config, local_files_only=True, **kwargs)
            if spec.prediction_type and pipe.scheduler.config.get("prediction_type") != spec.prediction_type:
                pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, prediction_type=spec.prediction_type)
            return pipe
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


def load_vae(loaded: LoadedModel, path: Path | None, settings: Settings, plan: DevicePlan) -> Any:
    """A VAE file (original layout) read with the model family's VAE config."""
    from diffusers import AutoencoderKL

    spec = loaded.spec
    if path is None or not Path(path).exists():
        raise ModelUnavailable(f"VAE file {path} is gone; press Refresh beside the model list")
    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=vae_config(spec, settings), subfolder="vae", dtype=plan.dtype, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelUnavailable(f"VAE {Path(path).name} does not fit {spec.name} ({spec.family}): {err}") from err
    return vae.to(loaded.base.vae.device)


def skip_inactive_steps(controlnet: ControlNetModel) -> ControlNetModel:
    """Make the ControlNet skip its work on steps where it has no effect.

    diffusers runs a ControlNet on every step and multiplies its residuals by 0 outside guidance start/end (and at
    weight 0). Those calls can only give zeros; this returns zeros of the shapes the ControlNet gave for the same
    input shape before, so it runs only on the steps where it acts. The result is identical.
    """
    original = controlnet.forward
    seen: dict[tuple[int, ...], list[tuple[torch.Size, torch.dtype]]] = {}  # input shape → residual shapes

    def forward(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0, **kwargs):
        shapes = seen.get(tuple(sample.shape))
        if conditioning_scale == 0 and shapes is not None:
            zeros = [torch.zeros(shape, dtype=dtype, device=sample.device) for shape, dtype in shapes]
            down, mid = tuple(zeros[:-1]), zeros[-1]
            return ControlNetOutput(down, mid) if kwargs.get("return_dict", True) else (down, mid)
        out = original(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, **kwargs)
        down, mid = out if isinstance(out, tuple) else (out.down_block_res_samples, out.mid_block_res_sample)
        seen[tuple(sample.shape)] = [(t.shape, t.dtype) for t in (*down, mid)]
        return out

    controlnet.forward = forward
    return controlnet


def is_inpainting_unet(unet: Any) -> bool:
    """A dedicated inpainting UNet takes 9 channels: latents, mask, masked-image latents (None: a transformer model,
    which has no UNet)."""
    return unet is not None and unet.config.in_channels == 9


Loader = Callable[[ModelSpec, Settings, DevicePlan], DiffusionPipeline]


class PipelineCache:
    def __init__(self, registry: ModelRegistry, settings: Settings, loader: Loader = load_pipeline):
        self.registry = registry
        self.settings = settings
        self.plan = plan_device(settings)
        self._loader = loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def resident(self) -> list[str]:
        return list(self._models)

    def peek(self, name: str) -> LoadedModel | None:
        """The model if it is loaded, without loading or reordering anything."""
        with self._lock:
            return self._models.get(name)

    def model(self, name: str) -> LoadedModel:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            spec = self.registry.get(name)
            while len(self._models) >= max(1, self.settings.max_models):
                self.unload(next(iter(self._models)))
            log.info("loading %s from %s", spec.name, spec.source)
            base = self._loader(spec, self.settings, self.plan)
            patches = family(spec.family).transformer_config.items()  # what its pipelines read and the class lacks
            missing = {key: value for key, value in patches if key not in base.transformer.config}
            if missing:
                base.transformer.register_to_config(**missing)
            base.set_progress_bar_config(disable=True)  # progress goes through the step callback
            guard_vae_nans(base.vae, spec.name)  # derived pipelines share this VAE, so they are guarded too
            options = apply_memory_options(base, self.settings, self.plan, spec.defaults.width)
            options += openvino_unet.attach(base, self.settings, self.plan)  # --backend openvino
            loaded = LoadedModel(spec, base, dict(base.scheduler.config), options, vaes={"": base.vae})
            self._models[name] = loaded
            return loaded

    def controlnet(self, name: str, control_type: str) -> ControlNetModel:
        """The model's ControlNet for ``control_type``, loaded once and kept with the model."""
        loaded = self.model(name)
        with self._lock:
            source = loaded.spec.controlnet(control_type) or ""
            if source not in loaded.controlnets:
                log.info("loading %s's %s ControlNet", name, control_type)
                controlnet = load_controlnet(loaded.spec, control_type, self.settings, self.plan)
                # skip_inactive_steps wraps a UNet ControlNet's forward; a DiT one's takes other arguments.
                is_unet = isinstance(controlnet, ControlNetModel)
                loaded.controlnets[source] = skip_inactive_steps(controlnet) if is_unet else controlnet
            return loaded.controlnets[source]

    def pipeline(self, name: str, task: str, control_types: tuple[str, ...] = ()) -> DiffusionPipeline:
        """The model's pipeline for ``task``, with the ControlNets of ``control_types`` attached (in order).

        Every derived pipeline shares the base pipeline's modules: attaching or switching ControlNets never
        loads or copies the base weights again.
        """
        loaded = self.model(name)
        if task == "txt2img" and not control_types:
            return loaded.base
        controlnets = [self.controlnet(name, control_type) for control_type in control_types]
        key = (task, *(loaded.spec.controlnet(t) or "" for t in control_types))
        with self._lock:
            if key not in loaded.derived:
                components: dict[str, Any] = {}
                unet = getattr(loaded.base, "unet", None)  # None: a transformer model (FLUX, SD3)
                if task == "inpaint" and loaded.spec.inpaint and not is_inpainting_unet(unet) and not controlnets:
                    components["unet"] = load_inpaint_unet(loaded.spec, self.settings, self.plan)
                if controlnets:
                    components["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
                # AutoPipeline.from_pipe reuses the base modules as they are: no copy and no dtype cast.
                fill = task == "inpaint" and flux_fill.is_fill_transformer(getattr(loaded.base, "transformer", None))
                named = family(loaded.spec.family).task_pipelines.get(flux_fill.FILL_TASK if fill else task)
                task_cls = flux_fill.task_class(named) if named else TASK_PIPELINES[task]  # where AutoPipeline has none
                pipe = task_cls.from_pipe(loaded.base, **components)
                pipe.set_progress_bar_config(disable=True)
                if components:
                    apply_memory_options(pipe, self.settings, self.plan)
                loaded.derived[key] = pipe
            return loaded.derived[key]

    def use_vae(self, name: str, vae: str, path: Path | None) -> None:
        """Give the model's pipelines the VAE ``vae`` (``""`` = its own, else the file ``path``): only the VAE is
        loaded (once) and swapped; the UNet and text encoders stay as they are."""
        loaded = self.model(name)
        with self._lock:
            if loaded.vae == vae:
                return
            if vae not in loaded.vaes:
                log.info("loading VAE %s for %s", vae, name)
                loaded.vaes[vae] = guard_vae_nans(load_vae(loaded, path, self.settings, self.plan), vae)
            module = loaded.vaes[vae]
            for pipe in (loaded.base, *loaded.derived.values()):
                pipe.vae = module
            loaded.vae = vae

    def use_text_encoders(self, name: str, files: dict[str, Path]) -> None:
        """Give the model's pipelines the text-encoder files ``files`` (part → file; {} = the automatic pairing's):
        only the encoders that change are loaded, and those they replace freed."""
        loaded = self.model(name)
        with self._lock:
            if encoder_choice.swap(loaded, files, self.plan.dtype):
                gc.collect()
                release_freed_memory()

    def unload(self, name: str) -> None:
        with self._lock:
            loaded = self._models.pop(name, None)
            if loaded is None:
                return
            log.info("unloading %s", name)
            loaded.derived.clear()
            loaded.controlnets.clear()
            if hasattr(loaded.base, "remove_all_hooks"):
                loaded.base.remove_all_hooks()
            del loaded
            gc.collect()
            release_freed_memory()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps a freed model's pages in its arenas, so without this a
    server's memory grows with each model switch even though nothing is held (no-op where libc has no malloc_trim).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, found once (find_library runs ldconfig)."""
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None
