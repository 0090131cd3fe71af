"""The engine: request → validated request → cached pipeline → images, infotexts, saved files.

It is a plain object with one entry point, ``run(request, on_step=…, cancel=…)``, shared by the UI,
the API endpoints, benchmarks and tests. State lives on the instance, never in module globals.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from backend.families import Family, family
from backend.generation import detail, inpaint_control, ip_adapter, noise
from backend.generation.interrupt import Cancelled, stoppable
from backend.generation.networks import EMBEDDING_REF, Networks, parse_lora_tags
from backend.generation.pipeline_call import StepCallback, StepEvent, call_pipeline, step_callback
from backend.generation.preview import latents_to_rgb
from backend.generation.prompting import count_label
from backend.generation.tasks import pipeline_key, prepare, prepare_txt2img
from backend.generation.wildcards import merge_results, split_batch
from backend.images.annotators import Annotators
from backend.images.ops import resize
from backend.images.upscalers import extras_upscale, upscale_latents
from backend.images.upscalers import upscale as upscale_image
from backend.library.infotext import format_infotext
from backend.library.outputs import PARAMETERS_KEY, OutputWriter
from backend.library.presets import PresetStore, apply_styles
from backend.models import encoder_choice, openvino_unet
from backend.models.detectors import Detectors
from backend.models.devices import describe_plan, tile_vae_for, weight_sizes
from backend.models.flux_fill import is_fill_transformer
from backend.models.loaders import is_cached
from backend.models.pipelines import LoadedModel, PipelineCache, is_inpainting_unet
from backend.models.registry import ModelRegistry
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, GenerationRequest, GenerationResult, Txt2ImgRequest
from backend.schema.seeds import batch_seeds, resolve_seed
from backend.schema.validate import validate
from backend.settings import Settings

log = logging.getLogger(__name__)


class Engine:
    concurrency = 1  # runs the front end may start at once: one per engine (one GPU)
    runs_grids = False  # whether ``run`` takes a GridRequest itself (a remote engine does); else backend.grid runs it

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None, cache: PipelineCache | None = None):
        self.settings = settings
        self.registry = registry or ModelRegistry.load(settings.models_file)
        if self.registry.families:
            self.registry.scan_checkpoints(settings)
        self.cache = cache or PipelineCache(self.registry, settings)
        self.annotators = Annotators(settings, self.cache.plan)
        self.networks = Networks(settings)
        self.detectors = Detectors(settings)  # the detail pass's (ADetailer)
        self.writer = OutputWriter(settings.output_dir)
        self.presets = PresetStore.load(settings.presets_dir, settings.user_dir)
        self.default_model, self.startup_notice = self._choose_default_model()
        default = self.registry.get(self.default_model)
        # Only a GPU's line has a memory plan: a CPU start reads no weight sizes (a single file's header, a folder).
        gpu = self.cache.plan.device == "cuda"
        sizes = weight_sizes(default.source, (file for _, file in default.parts)) if gpu else None
        self.precision = describe_plan(settings, self.cache.plan, sizes)  # shown on the page and logged at start
        self.precision += openvino_unet.describe(settings, self.cache.plan)  # --backend
        self.run_lock = threading.Lock()  # one pipeline run at a time per engine

    def _choose_default_model(self) -> tuple[str, str]:
        """The configured default, or the offline model when the default cannot be had offline."""
        name = self.settings.default_model
        if name not in self.registry.models:
            raise ValueError(f"default model {name!r} is not in {self.settings.models_file}")
        spec = self.registry.get(name)
        if self.settings.offline and spec.kind == "hub" and not is_cached(spec.source):
            fallback = self.settings.offline_model
            return fallback, (
                f"Offline: {name} ({spec.source}) is not in the local Hugging Face cache, so the "
                f"app uses {fallback!r}. Run once with network access to download {name}."
            )
        return name, ""

    def needs_download(self, name: str) -> bool:
        """A hub model that is not in the local cache while the network is off (or the hub unreachable)."""
        spec = self.registry.models.get(name)
        return bool(spec and self.settings.offline and spec.kind == "hub" and not is_cached(spec.source))

    def run(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        started = time.monotonic()
        request = self.apply_styles(validate(request, self.settings, self.registry.names))
        if not request.model:
            request = request.replace(model=self.default_model)
        count = request.batch_size
        request = request.replace(seed=resolve_seed(request.seed, count), subseed=resolve_seed(request.subseed, count))
        # Dynamic prompts: one run per stretch of pictures with the same resolved prompts; all checked before any work.
        runs = split_batch(request, self.settings.wildcards_dir)
        for one, _ in runs:
            self.check_family(one)
            self.networks.check(one.prompt, one.negative_prompt)  # a missing LoRA fails before any loading
        results = [self._run_checked(one, templates, on_step, cancel) for one, templates in runs]
        return merge_results(results, request, time.monotonic() - started)

    def _run_checked(
        self,
        request: GenerationRequest,
        templates: dict[str, str],
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationResult:
        """One checked request (its seed and prompts resolved) run; ``templates``: infotext keys its pictures add."""
        # Loading too happens under the lock: a model switch must never unload weights another run is using.
        with self.run_lock:
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation stopped")
            # Checked before loading: a file that does not fit is refused without loading the model first.
            encoders = encoder_choice.chosen(self.registry.get(request.model), request.text_encoders, self.settings)
            loaded = self.load_for(request.model, request.task)
            self.use_vae(request.model, request.vae)
            self.cache.use_text_encoders(request.model, encoders)
            context = {}
            if isinstance(request, ControlNetRequest):
                self._check_controlnets(loaded, request)
                context["maps"] = self._control_maps(request)
            elif inpaint_control.uses_controlnet(request):
                context["masked"] = family(loaded.spec.family).inpaint_control_masked
            prepared = prepare(request, **context)
            pipe = self.cache.pipeline(request.model, *pipeline_key(request))
            prepared.kwargs.update(ip_adapter.apply(pipe, request))  # in for this run, or taken out
            # LoRA tags and embeddings: applied to the model, taken out of the text it encodes; the infotext keeps them.
            networks = self.networks.apply(pipe, request.prompt, request.negative_prompt)
            prepared.kwargs.update(prompt=networks.prompt, negative_prompt=networks.negative_prompt or None)
            prepared.infotext.update(networks.infotext)
            prepared.infotext.update(templates)
            prepared.infotext.update(detail.infotext(request))
            openvino_unet.take_ready(pipe)  # auto: a UNet converted in the background goes on OpenVINO now
            raw = self.run_pipeline(request, pipe, loaded, prepared.kwargs, on_step, cancel)
            backend_notes = openvino_unet.take_notes(pipe)  # OpenVINO fallbacks and auto's choice, for the page
        images: list[Image.Image] = prepared.finish(raw)
        seeds = batch_seeds(request.seed, len(images))
        subseeds = batch_seeds(request.subseed, len(images))  # the variation seeds advance with the seeds
        infotexts = [
            format_infotext(request.replace(subseed=sub), seed, prepared.infotext)
            for seed, sub in zip(seeds, subseeds, strict=True)
        ]
        for image, text in zip(images, infotexts, strict=True):
            image.info[PARAMETERS_KEY] = text  # whoever serves or saves the picture keeps its parameters
        paths, warnings = self.save(images, infotexts, seeds) if request.save else ([], [])
        return GenerationResult(images, seeds, infotexts, request, paths, prepared.extras, [*backend_notes, *warnings])

    def run_pipeline(
        self,
        request: GenerationRequest,
        pipe: Any,
        loaded: LoadedModel,
        kwargs: dict[str, Any],
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> list[Any]:
        """A run's pipeline work, its arguments prepared (call under ``run_lock``): VAE tiling for its size, the
        pipeline call (Stop checked within steps) and, for txt2img, the hires fix's second pass.

        The sampler grid runs each cell it does not batch through here, so such a cell is its txt2img run.
        """
        model_family = family(loaded.spec.family)
        callback = self._step_callback(loaded.spec.latent_rgb_factors, request, on_step, cancel, model_family)
        tile_vae_for(pipe, request.width, request.height, self.settings)
        with stoppable(pipe, cancel):
            raw = call_pipeline(pipe, loaded, request, kwargs, callback)
            if isinstance(request, Txt2ImgRequest) and request.enable_hr:
                # The second pass encodes what the first did: the prompts without their LoRA tags.
                encoded = {key: value for key, value in kwargs.items() if "prompt" in key}
                raw = self._hires_pass(request, raw, loaded, encoded, on_step, cancel)
            if detail.wanted(request):  # ADetailer: on the finished pictures, with the model's inpaint pipeline
                inpaint, detector = self.cache.pipeline(request.model, "inpaint"), self.detectors.get(request.ad_model)
                prompts = (kwargs.get("prompt"), kwargs.get("negative_prompt"))
                raw = detail.detail_pass(request, raw, inpaint, loaded, detector, prompts, callback)
        return raw

    def _hires_pass(
        self, request: Txt2ImgRequest, first: list[Any], loaded, encoded: dict[str, Any], on_step, cancel
    ) -> list[Image.Image]:
        """A1111's hires fix: upscale each picture (or its latents), then img2img at the target size, same seeds.

        ``encoded``: the first pass's prompt arguments. The img2img pipeline comes from ``from_pipe`` (the cache), so
        it shares the loaded weights.
        """
        size, cover = request.hires_size(), request.hires_upscale_size()
        left, top = request.hires_crop()  # (0, 0) unless a resize size of another aspect ratio is cropped
        pipe = self.cache.pipeline(request.model, "img2img")
        if request.latent_hires:
            # The first pass returned latents (batch entries of channels × h × w); img2img takes 4-channel ones as is.
            f = pipe.vae_scale_factor
            rows, cols = slice(top // f, (top + size[1]) // f), slice(left // f, (left + size[0]) // f)
            bigger = [
                upscale_latents(latent[None], request.hr_upscaler, (cover[1] // f, cover[0] // f))[..., rows, cols]
                for latent in first
            ]
        else:
            box = (left, top, left + size[0], top + size[1])
            bigger = [
                upscale_image(image, request.hr_upscaler, 0, self.settings, field="hr_upscaler", target=cover).crop(box)
                for image in first
            ]
        second = request.replace(width=size[0], height=size[1], steps=request.hr_steps or request.steps)
        kwargs = {**prepare_txt2img(second.replace(enable_hr=False)).kwargs, "strength": request.strength}
        for key in ("width", "height", "num_images_per_prompt", "prompt", "negative_prompt"):
            del kwargs[key]
        kwargs.update(encoded)
        out: list[Image.Image] = []
        model_family = family(loaded.spec.family)
        callback = self._step_callback(loaded.spec.latent_rgb_factors, second, on_step, cancel, model_family)
        tile_vae_for(pipe, *size, self.settings)
        seeds = batch_seeds(request.seed, len(first))
        for seed, image in zip(seeds, bigger, strict=True):
            # One picture per call keeps each picture's own seed, as the first pass had it.
            one = second.replace(seed=seed, batch_size=1)
            out += call_pipeline(pipe, loaded, one, {**kwargs, "image": image}, callback)
        return out

    def upscale(self, image: Any, name: str, scale: Any) -> Image.Image:
        """The Extras tab and the upscale endpoints: one picture on its own, one run at a time on the device."""
        with self.run_lock:
            return extras_upscale(image, name, scale, self.settings)

    def save(self, images: list[Image.Image], infotexts: list[str], seeds: list[int]) -> tuple[list[Path], list[str]]:
        """Save what can be saved; a full disk or an unwritable folder loses no picture the user sees."""
        paths: list[Path] = []
        failed: dict[str, list[int]] = {}
        if not self.settings.save_outputs:
            return paths, []
        for image, text, seed in zip(images, infotexts, seeds, strict=True):
            try:
                paths.append(self.writer.save(image, text, seed))
            except OSError as err:
                failed.setdefault(err.strerror or str(err), []).append(seed)
        warnings = [
            f"{len(which)} of {len(images)} pictures (seeds {', '.join(map(str, which))}) could not be saved in the "
            f"output folder: {reason}. They are shown here: download the ones you want to keep."
            for reason, which in failed.items()
        ]
        for warning in warnings:
            log.error("%s (output folder %s)", warning, self.settings.output_dir)
        return paths, warnings

    def refresh_models(self) -> list[str]:
        """Scan the checkpoint, VAE, LoRA and embedding folders again (the Refresh button); returns why files were
        skipped.

        A loaded model whose file is gone stays loaded until it is unloaded; new runs can no longer pick it.
        """
        with self.run_lock:
            self.registry.scan_checkpoints(self.settings)
            self.networks.refresh()
        return list(self.registry.problems)

    def token_label(self, text: str, model: str = "") -> str:
        """``42/75`` for a prompt box: its tokens on ``model``'s tokenizer (loaded only when no run is going,
        since loading may unload the model a run uses); "" when the model is busy loading elsewhere."""
        name = model if model in self.registry.models else self.default_model
        loaded = self.cache.peek(name)
        if loaded is None:
            if not self.run_lock.acquire(blocking=False):
                return ""
            try:
                loaded = self.cache.model(name)
            finally:
                self.run_lock.release()
        return count_label(loaded.base.tokenizer, text)

    def check_family(self, request: GenerationRequest) -> None:
        """Refuse, by field name, what the model's family cannot do (before anything is loaded): its own refusals,
        and LoRA tags or embeddings on a family whose models do not take them yet. Single runs and the grid's
        planner both come through here."""
        model_family = family(self.registry.get(request.model).family)
        refusal = model_family.unsupported(request) or noise.refusal(request)
        if refusal:
            raise ValidationError(*refusal)
        detail.check(request, model_family, self.detectors)
        for name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            if not model_family.networks and parse_lora_tags(text)[1]:
                what = f"{model_family.label} models do not take LoRAs"
                raise ValidationError(name, f"{what}: remove them from the {name}")
            if not model_family.embeddings and (EMBEDDING_REF.search(text) or self.networks.embedding_names(text, "")):
                what = f"{model_family.label} models do not take textual-inversion embeddings yet"
                raise ValidationError(name, f"{what}: remove them from the {name}")

    def load_for(self, model: str, task: str) -> LoadedModel:
        """The loaded model, refused with a clear message when it cannot do ``task`` (call under run_lock)."""
        loaded = self.cache.model(model)
        unet, transformer = getattr(loaded.base, "unet", None), getattr(loaded.base, "transformer", None)
        if task != "inpaint" and (is_inpainting_unet(unet) or is_fill_transformer(transformer)):  # inpainting-only
            raise ValidationError("model", f"{model} is an inpainting model: use it in the inpaint tab")
        return loaded

    def use_vae(self, model: str, vae: str) -> None:
        """Give ``model`` the VAE ``vae`` ("" = its own), refused with a message when there is no such VAE."""
        if vae and vae not in self.registry.vaes:
            have = ", ".join(self.registry.vaes) or "none; put .safetensors VAEs in models/vae and press Refresh"
            raise ValidationError("vae", f"unknown VAE {vae!r}; choose the model's own or one of: {have}")
        self.cache.use_vae(model, vae, self.registry.vaes.get(vae))

    def control_maps(self, request: ControlNetRequest) -> list[Image.Image]:
        """Only the preprocessing of a ControlNet request: each unit's control map at the output size."""
        request = validate(request, self.settings)
        with self.run_lock:  # detectors may share the GPU with the pipelines
            return self._control_maps(request)

    def _control_maps(self, request: ControlNetRequest) -> list[Image.Image]:
        size = (request.width, request.height)
        maps = []
        for unit in request.units:
            if unit.preprocessor == "none":
                maps.append(resize(unit.image.convert("RGB"), *size, request.resize_mode, fill="black"))
            else:
                maps.append(self.annotators.control_map(unit.control_type, unit.image, size, unit, request.resize_mode))
        return maps

    @staticmethod
    def _check_controlnets(loaded: LoadedModel, request: ControlNetRequest) -> None:
        for index, unit in enumerate(request.units):
            refusal = loaded.spec.missing_controlnet(unit.control_type)
            if refusal:
                raise ValidationError("control_type" if index == 0 else f"control_type_{index + 1}", refusal)

    def apply_styles(self, request: GenerationRequest) -> GenerationRequest:
        """The request with its styles merged into the prompts (what runs and what the infotext says)."""
        if not request.styles:
            return request
        try:
            styles = self.presets.style_list(request.styles)
        except KeyError as err:
            raise ValidationError("styles", str(err.args[0])) from None
        prompt, negative = apply_styles(request.prompt, request.negative_prompt, styles)
        return request.replace(prompt=prompt, negative_prompt=negative, styles=())

    def _step_callback(self, factors, request, on_step, cancel, model_family: Family | None = None):
        every = self.settings.preview_every
        size = (request.width, request.height)
        packed = model_family is not None and model_family.packed_latents

        def report(done: int, total: int, latents: torch.Tensor) -> None:
            if on_step is not None:
                preview = latents_to_rgb(latents, factors, size, packed) if every and done % every == 0 else None
                on_step(StepEvent(done, total, preview))

        return step_callback(cancel, report)
