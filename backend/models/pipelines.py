"""The pipeline cache: load each model's weights once, derive every task pipeline from them.

Task pipelines (img2img, inpaint, ControlNet) are built with ``from_pipe`` from the text2img pipeline, so they share
its modules: no second copy of any weight. At most ``settings.max_models`` models stay resident; the least recently
used one is unloaded explicitly when another is loaded. Reading the weights is ``loaders``' work.
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

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    ControlNetModel,
    DiffusionPipeline,
)
from diffusers.models.controlnets.controlnet import ControlNetOutput

from backend.families import family
from backend.models import encoder_choice, flux_fill, openvino_unet
from backend.models.devices import DevicePlan, apply_memory_options, plan_device
from backend.models.loaders import (
    load_controlnet,
    load_inpaint_unet,
    load_pipeline,
    load_vae,
)
from backend.models.nan_guard import guard_vae_nans
from backend.models.registry import ModelRegistry, ModelSpec
from backend.settings import Settings

log = logging.getLogger(__name__)

TASK_PIPELINES: dict[str, Any] = {
    "txt2img": AutoPipelineForText2Image,
    "img2img": AutoPipelineForImage2Image,
    "inpaint": AutoPipelineForInpainting,
}


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
            options += openvino_unet.attach(base, self.settings, self.plan)  # --backend openvino / auto
            if options:
                log.info("%s: %s", spec.name, "; ".join(options))
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
                    components["unet"] = openvino_unet.attach_variant(components["unet"], self.settings, self.plan)
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
                module = load_vae(loaded.spec, path, self.settings, self.plan).to(loaded.base.vae.device)
                loaded.vaes[vae] = guard_vae_nans(module, vae)
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
