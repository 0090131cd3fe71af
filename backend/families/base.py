"""What a model family declares: how its models load, what its pipelines are, and what it can do.

A ``Family`` is data plus one question, ``unsupported(request)``. The loaders and the engine ask it instead of
comparing family names, so a new family (FLUX, SD 3.5, …) is one new module and no ``if family == …`` elsewhere.
Everything here is plain Python: diffusers classes are named by string and resolved by whoever loads weights
(``backend.models.pipelines``), so reading what a family can do never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from backend.schema.choices import CONTROL_TYPES
from backend.schema.fields import field_default
from backend.schema.inpaint_control import CONTROLNET_INPAINT, INPAINT_STRATEGIES
from backend.schema.ip_adapter import is_on as ip_adapter_on
from backend.schema.requests import GenerationRequest
from backend.schema.samplers import SAMPLER_TABLES, supported_schedules

# Optional request fields a family may or may not honour. A request uses one when it sets it off its default (the
# schema's, which every family runs); only then can a family that lacks it refuse the request.
#: field name → (what messages call it, the neutral value, whether a request uses it)
Option = tuple[str, Any, Callable[[Any], bool]]


def _option(name: str, what: str, also: Callable[[Any], bool] | None = None) -> Option:
    """``also``: a further condition for the option to change a run."""
    neutral = field_default(GenerationRequest, name)
    return what, neutral, lambda r: getattr(r, name, neutral) != neutral and (also is None or also(r))


OPTIONS: dict[str, Option] = {
    "clip_skip": _option("clip_skip", "clip skip"),
    "deep_cache": _option("deep_cache", "DeepCache"),
    "dit_cache": _option("dit_cache", "the DiT block cache (First Block Cache)"),
    # As backend.generation.cfg_cutoff.active: a cut-off below 1 changes nothing on an unguided run.
    "skip_cfg_after": _option("skip_cfg_after", "skip CFG after", lambda r: getattr(r, "guidance_scale", 0) > 1),
    # A1111's "Eta for DDIM": samplers whose step takes none run without it (A1111's rule; no flow sampler takes it).
    "eta": _option("eta", "eta"),
    # FLUX.1 dev's distilled guidance: a family without guidance-distilled models refuses it off its default.
    "distilled_cfg_scale": _option("distilled_cfg_scale", "distilled CFG"),
}

# What the SD families (UNet, CLIP) honour: every option but FLUX's distilled guidance and the transformer cache.
SD_OPTIONS = frozenset(OPTIONS) - {"distilled_cfg_scale", "dit_cache"}

TASKS = frozenset({"txt2img", "img2img", "inpaint", "controlnet"})  # the request kinds (``request.task``)

# How an inpaint request can run: a dedicated 9-channel UNet (the model's inpainting partner, or the model itself),
# or a plain UNet whose latents outside the mask are blended back at every step (diffusers' 4-channel path).
INPAINTING_UNET = "inpainting UNet"
LATENT_BLENDING = "latent blending"
# A third, chosen by the request's ``inpaint_strategy``: the plain UNet steered by the family's inpaint ControlNet.
SD_INPAINT_STRATEGIES = (INPAINTING_UNET, LATENT_BLENDING, CONTROLNET_INPAINT)

# Like the big web UIs we do not run the SD 1.x/2.x safety checker (documented in docs/models.md).
NO_SAFETY_CHECKER = MappingProxyType({"safety_checker": None, "requires_safety_checker": False})


@dataclass(frozen=True, eq=False)
class Family:
    """One model family. The per-family modules (``sd15``, ``sd2``, ``sdxl``) each create one.

    Data that users edit (default sizes, steps, CFG, preview colours, ControlNet sources) stays in
    ``presets/models.json`` under ``families.<name>``; what is fixed by the architecture is declared here.
    """

    name: str  # the key in presets/models.json and the config folder backend/configs/<name>
    label: str  # what people call it: "SD 1.x"
    # diffusers' model types (``infer_diffusers_model_type``) this family claims → whether that type's UNet is a
    # 9-channel inpainting one. A model type belongs to exactly one family.
    model_types: Mapping[str, bool]
    # The diffusers pipeline class (by name, resolved on load) ``from_single_file`` builds a checkpoint file with.
    single_file_pipeline: str
    # The scheduler's prediction type for a single file. ``prediction_varies``: the family's files come as eps and as
    # v models and do not say which, so an A1111 ``name.yaml`` sidecar decides and the model's label shows it.
    default_prediction: str = "epsilon"
    prediction_varies: bool = False
    # Extra ``from_pretrained``/``from_single_file`` keyword arguments (e.g. no safety checker).
    pretrained_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Prompt encoding: True where two CLIP text encoders are concatenated and a pooled embedding goes along (SDXL).
    dual_text_encoders: bool = False
    # The optional request fields (``OPTIONS``) it honours, and those it accepts but ignores (SDXL's clip skip, as
    # in A1111, so an SDXL picture made there with "Clip skip: 2" draws the same here). Any other one, when a
    # request uses it, is refused by ``unsupported``.
    supports: frozenset[str] = SD_OPTIONS
    ignores: frozenset[str] = frozenset()
    tasks: frozenset[str] = TASKS
    # Whether the grid may denoise several cells in one batch (backend.grid's ``can_batch`` has the last word: it
    # also looks at the loaded pipeline).
    grid_batching: bool = False
    controlnet_types: frozenset[str] = frozenset(CONTROL_TYPES)  # control types its ControlNet pipelines take
    # The diffusers class its ControlNets load as, and the pipeline argument that takes the control map (the DiT
    # ControlNet pipelines call it ``control_image``). Theirs have no guess mode and no img2img form for every
    # family: ``controlnet_img2img`` False refuses a ControlNet request's init image.
    controlnet_model: str = "ControlNetModel"
    control_image_argument: str = "image"
    guess_mode: bool = True
    controlnet_img2img: bool = True
    # Task pipelines (by class name) where diffusers' AutoPipeline has none for its models (Chroma's img2img).
    task_pipelines: Mapping[str, str] = field(default_factory=dict)
    # Transformer config entries its pipelines read but its transformer class does not declare, set on load where
    # the model's config lacks them (diffusers 0.42's ChromaInpaintPipeline reads ``guidance_embeds``).
    transformer_config: Mapping[str, Any] = field(default_factory=dict)
    inpaint_strategies: tuple[str, ...] = (INPAINTING_UNET, LATENT_BLENDING)
    ip_adapter: bool = False  # IP-Adapter files (backend.generation.ip_adapter) fit its UNet
    # What its inpaint ControlNet (presets' controlnets.inpaint) sees where the picture is repainted: -1 for SD 1.5's
    # control_v11p_sd15_inpaint (the extension's inpaint_only), white (1) for the SDXL one its model card describes.
    inpaint_control_masked: float = -1.0
    # The sampler table its models run (``backend.schema.samplers.SAMPLER_TABLES``): "sd" or a flow-matching one.
    sampler_table: str = "sd"
    # A1111 emphasis and BREAK through compel (CLIP-only prompt encoders). Without it the prompt goes to the
    # pipeline as plain text (FLUX and SD3: their T5 encoder is not compel's).
    prompt_weighting: bool = True
    # Pipeline keyword arguments its pipelines do not take, dropped by ``pipeline_kwargs`` (the field behind each
    # must be refused or declared in ``ignores``: FLUX and SD3 ignore eta, as A1111 does for samplers without it).
    pipeline_drops: frozenset[str] = frozenset()
    # Its img2img pipeline takes width and height besides the image (FLUX's and SD3's would otherwise resize the
    # picture to their default size).
    img2img_size: bool = False
    # True CFG (FLUX): the request's CFG scale is the pipeline's ``true_cfg_scale`` (1 = off; a negative prompt acts
    # only above 1) and ``guidance_scale`` carries the distilled guidance (``distilled_cfg_scale``); a model without
    # guidance embedding (schnell) ignores that number, as the pipeline does.
    true_cfg: bool = False
    # Its latents reach the step callback packed as 2×2 patches per token (FLUX): the preview unpacks them.
    packed_latents: bool = False
    # Latent-space hires upscalers (the first pass's latents resized for the img2img pass) work on its latents.
    latent_hires: bool = True
    # LoRAs named in the prompt, and textual-inversion embeddings (backend.generation.networks).
    networks: bool = True
    embeddings: bool = True

    def __post_init__(self) -> None:
        unknown = (self.supports | self.ignores) - set(OPTIONS)
        if unknown:
            raise ValueError(f"family {self.name}: unknown options {sorted(unknown)}; known: {sorted(OPTIONS)}")
        if self.supports & self.ignores:
            raise ValueError(f"family {self.name}: {sorted(self.supports & self.ignores)} both supported and ignored")
        if ("inpaint" in self.tasks) != bool(self.inpaint_strategies):
            raise ValueError(f"family {self.name}: it runs inpainting if and only if it has an inpaint strategy")
        if self.sampler_table not in SAMPLER_TABLES:
            raise ValueError(f"family {self.name}: unknown sampler table {self.sampler_table!r}")

    def unsupported(self, request: Any) -> tuple[str, str] | None:
        """(field name, message) for the first thing ``request`` asks that this family cannot do, else None.

        Only what a request really uses counts (a field at its neutral value never does), so a request that runs on
        every family is refused by none. The engine raises ``ValidationError(*refusal)`` before loading anything.
        """
        task = getattr(request, "task", "")
        if task in TASKS and task not in self.tasks:
            return "model", f"{self.label} models do not run {task}; pick a model of another family"
        for name, (what, neutral, used) in OPTIONS.items():
            if name not in self.supports and name not in self.ignores and used(request):
                return name, f"{self.label} models do not support {what}; leave it at {neutral:g}"
        if not self.latent_hires and getattr(request, "enable_hr", False) and getattr(request, "latent_hires", False):
            return "hr_upscaler", (
                f"{self.label} models have no latent hires upscaling yet; pick a picture upscaler such as Lanczos"
            )
        if ip_adapter_on(request) and not self.ip_adapter:
            return "ip_adapter", f"{self.label} models take no IP-Adapter; set it to None"
        strategy = getattr(request, "inpaint_strategy", None)
        if strategy is not None and strategy not in INPAINT_STRATEGIES:
            return "inpaint_strategy", f"inpaint_strategy must be one of: {', '.join(INPAINT_STRATEGIES)}"
        if strategy == CONTROLNET_INPAINT and CONTROLNET_INPAINT not in self.inpaint_strategies:
            return "inpaint_strategy", f"{self.label} models have no ControlNet inpaint; pick auto"
        units = getattr(request, "units", ()) or ()
        if units and not self.guess_mode and getattr(request, "guess_mode", False):
            return "guess_mode", f"{self.label} ControlNets have no guess mode; turn it off"
        if units and not self.controlnet_img2img and getattr(request, "init_image", None) is not None:
            return "init_image", f"{self.label} ControlNets start from noise only; remove the init image"
        for index, unit in enumerate(units):
            control_type = getattr(unit, "control_type", "")
            if control_type not in self.controlnet_types:
                have = ", ".join(sorted(self.controlnet_types)) or "none"
                # The engine's naming for a unit's field: control_type, control_type_2, …
                name = "control_type" if index == 0 else f"control_type_{index + 1}"
                return name, f"{self.label} models have no {control_type} ControlNet (they take: {have})"
        return self.unsupported_sampler(request)

    def unsupported_sampler(self, request: Any) -> tuple[str, str] | None:
        """(field, message) when the request's sampler or schedule type is not in this family's sampler table."""
        sampler, schedule = getattr(request, "sampler", None), getattr(request, "schedule", None)
        if sampler is None:
            return None
        samplers = SAMPLER_TABLES[self.sampler_table]
        if sampler not in samplers:
            return "sampler", f"{self.label} models have no sampler {sampler!r}; choose one of: {', '.join(samplers)}"
        schedules = supported_schedules(sampler, self.sampler_table)
        if schedule is not None and schedule not in schedules:
            return "schedule", (
                f"on {self.label} models the sampler {sampler!r} has no schedule type {schedule!r}; "
                f"choose one of: {', '.join(schedules)}"
            )
        return None

    def pipeline_kwargs(self, request: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The pipeline arguments ``kwargs`` (made by backend.generation.tasks) as this family's pipelines take them."""
        out = {key: value for key, value in kwargs.items() if key not in self.pipeline_drops}
        if "controlnet_conditioning_scale" in out:
            if not self.guess_mode:
                out.pop("guess_mode", None)  # refused by ``unsupported`` when on: off is the only value
            if self.control_image_argument != "image" and "control_image" not in out:
                out[self.control_image_argument] = out.pop("image")
        if self.img2img_size and "image" in out and "mask_image" not in out and "width" not in out:
            out.update(width=request.width, height=request.height)
        if self.true_cfg:
            out["true_cfg_scale"] = request.guidance_scale
            out["guidance_scale"] = request.distilled_cfg_scale
            guided = request.guidance_scale > 1
            if guided and out.get("negative_prompt") is None and "negative_prompt_embeds" not in out:
                out["negative_prompt"] = ""  # true CFG with an empty negative prompt, as Forge runs it
        return out

    def clip_skip(self, value: int) -> int:
        """The clip skip a request's ``value`` runs with on this family: 1 where the family ignores it."""
        return value if "clip_skip" in self.supports else 1

    def checkpoint_label(self, prediction_type: str, inpainting: bool) -> str:
        """How the model list describes a checkpoint file of this family: "SD 2.x v inpainting"."""
        parts = [self.label]
        if self.prediction_varies:
            parts.append("v" if prediction_type == "v_prediction" else "eps")
        if inpainting:
            parts.append("inpainting")
        return " ".join(parts)
