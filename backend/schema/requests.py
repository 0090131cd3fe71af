"""The request and result dataclasses every entry point builds: the UI tabs, both APIs, the grid, scripts.

Each field is declared once with its metadata (``backend.schema.fields.spec``): limits, label, infotext key, and
whether presets, Send and the A1111 API use it. Validation is ``backend.schema.validate``; the vocabulary of choices
is ``backend.schema.choices``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from backend.schema.choices import DISTILLED_CFG, MAX_SEED, MIN_DETECT_RESOLUTION, SIZE_MULTIPLE
from backend.schema.detail import detailed_dataclass
from backend.schema.fields import Limit, collect_limits, spec
from backend.schema.geometry import Margins
from backend.schema.infotext_codecs import (
    NOT_READ,
    hires_only,
    only_masked,
    read_hires_resize,
    read_seed_resize,
    read_size,
    seed_resize_text,
    size_text,
)
from backend.schema.inpaint_control import inpaint_dataclass
from backend.schema.ip_adapter import ip_adapter_fields
from backend.schema.samplers import DEFAULT_SAMPLER, DEFAULT_SCHEDULE, SAMPLERS
from backend.settings import Settings

EXTRA = dict(common=True, send=True, absent_means_default=True)  # the "Extra" seed row's fields
# Width and height: shared by every request (image tasks start at 0 = "the input image's size").
WIDTH = dict(label="Width", limit=lambda s: Limit(64, s.max_width, SIZE_MULTIPLE), infotext="Size", written=size_text,
             read=read_size, common=True, preset=True)
HEIGHT = dict(label="Height", limit=lambda s: Limit(64, s.max_height, SIZE_MULTIPLE), common=True, preset=True)
STRENGTH_LIMIT = dict(limit=lambda s: Limit(0.0, 1.0, 0.01), infotext="Denoising strength", preset=True,
                      a1111="denoising_strength")
OUTPAINT = dict(limit=lambda s: Limit(0, max(s.max_width, s.max_height), SIZE_MULTIPLE))


@detailed_dataclass  # the detail pass's (ADetailer) fields follow these: backend.schema.detail
@ip_adapter_fields  # then the IP-Adapter's: backend.schema.ip_adapter
class GenerationRequest:
    """Fields every task shares. ``seed=-1`` asks for a random seed; ``model=""`` the default model."""

    prompt: str = spec("", label="Prompt", common=True, send=True)
    negative_prompt: str = spec("", label="Negative prompt", common=True, preset=True, send=True)
    seed: int = spec(-1, label="Seed (-1 = random)", limit=lambda s: Limit(-1, MAX_SEED), infotext="Seed",
                     common=True, send=True)
    # A1111's "Extra" seed row (backend.generation.noise): the start noise slerped toward the variation seed's, and
    # the seed's noise made at another size, pasted centred. Written only when they act, as A1111 does.
    subseed: int = spec(-1, label="Variation seed (-1 = random)", limit=lambda s: Limit(-1, MAX_SEED),
                        info="A second seed whose noise is blended into the seed's: low strengths give variations.",
                        infotext="Variation seed", written=lambda r: r.subseed if r.subseed_strength > 0 else None,
                        **EXTRA)
    subseed_strength: float = spec(0.0, label="Variation strength", limit=lambda s: Limit(0.0, 1.0, 0.01),
                                   info="0 = the seed's picture, 1 = the variation seed's; between, a blend.",
                                   infotext="Variation seed strength",
                                   written=lambda r: r.subseed_strength if r.subseed_strength > 0 else None, **EXTRA)
    seed_resize_from_w: int = spec(0, label="Resize seed from width (0 = off)", infotext="Seed resize from",
                                   info="The seed's noise as made at this size, pasted centred: its composition kept.",
                                   limit=lambda s: Limit(0, s.max_width, SIZE_MULTIPLE), written=seed_resize_text,
                                   read=read_seed_resize, **EXTRA)
    seed_resize_from_h: int = spec(0, label="Resize seed from height (0 = off)",
                                   limit=lambda s: Limit(0, s.max_height, SIZE_MULTIPLE), **EXTRA)
    steps: int = spec(20, label="Steps", limit=lambda s: Limit(1, s.max_steps), infotext="Steps", common=True,
                      preset=True, send=True)
    guidance_scale: float = spec(
        7.0,
        label="CFG scale",
        info="How closely the picture follows the prompt: higher is more literal, too high burns the colours.",
        limit=lambda s: Limit(0.0, s.max_guidance, 0.5),
        infotext="CFG scale",
        written=lambda r: float(r.guidance_scale),
        common=True,
        preset=True,
        send=True,
        a1111="cfg_scale",
    )
    width: int = spec(512, **WIDTH)
    height: int = spec(512, **HEIGHT)
    batch_size: int = spec(1, label="Batch size", limit=lambda s: Limit(1, s.max_batch), common=True, preset=True)
    sampler: str = spec(DEFAULT_SAMPLER, label="Sampler", infotext="Sampler", read=NOT_READ, common=True,
                        preset=True, send=True, a1111="sampler_name")
    schedule: str = spec(
        DEFAULT_SCHEDULE,
        label="Schedule type",
        info="How the noise level falls over the steps; Karras spends more steps on fine detail.",
        infotext="Schedule type",
        read=NOT_READ,  # read with the sampler (backend.library.infotext: A1111's older combined names)
        common=True,
        preset=True,
        send=True,
        a1111="scheduler",
    )
    model: str = spec("", label="Model", infotext="Model", common=True, preset=True, send=True,
                      a1111="override_settings.sd_model_checkpoint")
    # Applied to the prompts by the engine; the infotext has the result.
    styles: tuple[str, ...] = spec((), label="Styles", common=True, preset=True)
    save: bool = True  # write the pictures to the output folder (when the server saves at all)
    # "" = the model's own VAE; else a file of the VAE folders by name (backend.models.checkpoints).
    vae: str = spec("", label="VAE", infotext="VAE", common=True, send=True, absent_means_default=True)
    # "" = the automatic pairing; else file names of the text-encoder folders, comma-separated
    # (backend.models.encoder_choice). Not an A1111 body field: Forge's forge_additional_modules is server paths.
    text_encoders: str = spec("", label="Text encoders", info="FLUX / SD3 / Chroma files without their own: the "
                              "text-encoder files to use (none chosen = the first fitting file of each kind)",
                              infotext="Text encoders", common=True, send=True, absent_means_default=True)
    # A1111's: 2 = the text encoder's last layer left out. Written only when set, as A1111 does.
    clip_skip: int = spec(1, label="Clip skip", limit=lambda s: Limit(1, 12), infotext="Clip skip",
                          written=lambda r: r.clip_skip if r.clip_skip > 1 else None)
    # Fraction of the steps with CFG; the rest skip the uncond pass (1 = never skip). Written when it changed the run.
    skip_cfg_after: float = spec(
        1.0,
        label="Skip CFG after (fraction of steps; 1 = never)",
        info="Below 1, the last steps run without the negative prompt's pass: faster, slightly different.",
        limit=lambda s: Limit(0.05, 1.0, 0.05),
        infotext="Skip CFG after",
        written=lambda r: r.skip_cfg_after if r.skip_cfg_after < 1 and r.guidance_scale > 1 else None,
        common=True,
        send=True,
        absent_means_default=True,
    )
    # DeepCache: the UNet's deep blocks run every Nth step, reused between (1 = every step).
    deep_cache: int = spec(
        1,
        label="DeepCache interval (1 = off)",
        info="N > 1: the UNet's deep layers run every Nth step and are reused between: faster, slightly different.",
        limit=lambda s: Limit(1, 10),
        infotext="DeepCache interval",
        written=lambda r: r.deep_cache if r.deep_cache > 1 else None,
        common=True,
        send=True,
        absent_means_default=True,
    )
    # First Block Cache on DiT transformers (FLUX, SD 3.x): later blocks skipped on steps whose first block's output
    # moved less than this threshold (0 = every block on every step).
    dit_cache: float = spec(
        0.0,
        label="DiT block cache threshold (0 = off)",
        info="FLUX / SD 3.x: above 0, steps whose first block changed less than this reuse the other blocks' last "
        "result: faster, slightly different (0.05-0.2 is typical).",
        limit=lambda s: Limit(0.0, 1.0, 0.01),
        infotext="First block cache",
        written=lambda r: r.dit_cache if r.dit_cache > 0 else None,
        common=True,
        send=True,
        absent_means_default=True,
    )
    # A1111's "Eta for DDIM": the noise a DDIM step adds back (0 = deterministic). Samplers whose step takes no eta
    # run without it, as in A1111, and their infotext does not claim it.
    eta: float = spec(
        0.0,
        label="Eta (DDIM)",
        info="DDIM only: noise added back at each step; 0 is plain deterministic DDIM, higher is less predictable.",
        limit=lambda s: Limit(0.0, 1.0, 0.01),
        infotext="Eta DDIM",
        written=lambda r: r.eta if r.eta > 0 and r.sampler in SAMPLERS and SAMPLERS[r.sampler].eta else None,
        common=True,
        preset=True,
        send=True,
        absent_means_default=True,
    )

    # FLUX.1 dev's distilled guidance (Forge's "Distilled CFG"): a number the transformer reads, apart from real CFG
    # (``guidance_scale``, FLUX's true CFG, off at 1). Only families with guidance-distilled models take it off its
    # default (backend.families.OPTIONS); written when set off it. The page shows it for those families only.
    distilled_cfg_scale: float = spec(
        DISTILLED_CFG,
        label="Distilled CFG",
        info="FLUX.1 dev's distilled guidance (what its CFG scale means); real CFG stays 1 unless you want it.",
        limit=lambda s: Limit(0.0, 30.0, 0.1),
        infotext="Distilled CFG Scale",
        written=lambda r: r.distilled_cfg_scale if r.distilled_cfg_scale != DISTILLED_CFG else None,
        common=True,
        preset=True,
        send=True,
        absent_means_default=True,
    )

    # Dynamic prompts ({a|b}, __wildcard__; backend/generation/wildcards.py): off = each picture draws at random from
    # its own seed; on = the batch's pictures take every combination in turn. The infotext keeps the template instead.
    combinatorial_prompts: bool = spec(
        False,
        label="Combinatorial prompts",
        info="With {a|b} or __wildcards__ in the prompt: on, the pictures take every combination in turn; off, each "
        "picture draws at random, seeded by its own seed.",
        common=True,
        preset=True,
    )

    task: ClassVar[str] = "generation"

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass
class Txt2ImgRequest(GenerationRequest):
    """``enable_hr``: A1111's hires fix. Generate at width×height, upscale by ``hr_scale`` with ``hr_upscaler``
    (a latent mode, Lanczos or a model file, backend.images.upscalers), then an img2img pass of ``hr_steps``
    (0 = ``steps``) at denoising ``strength`` on the larger picture.

    ``hr_resize_x``/``hr_resize_y`` (A1111's "Resize width/height to"; 0 = not set) give the hires size instead of
    ``hr_scale``: one side alone keeps the base aspect ratio; both, of another aspect ratio, upscale to cover that size
    and keep its middle (A1111's crop)."""

    enable_hr: bool = spec(False, label="Hires. fix", absent_means_default=True)  # no Hires keys: no hires fix
    # The hires pass's denoising strength (A1111 writes it only with the hires fix).
    strength: float = spec(0.7, label="Denoising strength", written=hires_only(lambda r: r.strength),
                           **STRENGTH_LIMIT)
    # A1111 writes one of the two: the resize size as sent (a side may be 0), or the scale.
    hr_resize_x: int = spec(0, infotext="Hires resize",
                            written=hires_only(lambda r: f"{r.hr_resize_x}x{r.hr_resize_y}" if r.hires_resize
                                               else None),
                            read=lambda text: read_hires_resize(text))
    hr_resize_y: int = 0
    hr_scale: float = spec(2.0, label="Hires upscale", infotext="Hires upscale",
                           written=hires_only(lambda r: None if r.hires_resize else f"{r.hr_scale:g}"),
                           read=lambda text: {"hr_scale": float(text), "enable_hr": True})
    hr_steps: int = spec(0, label="Hires steps", limit=lambda s: Limit(0, s.max_steps), infotext="Hires steps",
                         written=hires_only(lambda r: r.hr_steps or None), a1111="hr_second_pass_steps")
    hr_upscaler: str = spec("Lanczos", label="Hires upscaler", infotext="Hires upscaler",
                            written=hires_only(lambda r: r.hr_upscaler))

    task: ClassVar[str] = "txt2img"

    @property
    def latent_hires(self) -> bool:
        """The hires fix resizes the first pass's latents (A1111's "Latent …" upscalers), not its pictures."""
        return self.enable_hr and self.hr_upscaler.startswith("Latent")

    @property
    def hires_resize(self) -> bool:
        """The hires size is given (``hr_resize_x``/``hr_resize_y``), not a scale."""
        return bool(self.hr_resize_x or self.hr_resize_y)

    def hires_size(self) -> tuple[int, int]:
        """The second pass's size: the base size × ``hr_scale``, or the resize size (a missing side follows the
        base aspect ratio), rounded down to multiples of 8."""
        if self.hires_resize:
            x, y = self.hr_resize_x, self.hr_resize_y
            size = (x or y * self.width // self.height, y or x * self.height // self.width)
        else:
            size = (int(self.width * self.hr_scale), int(self.height * self.hr_scale))
        return size[0] // SIZE_MULTIPLE * SIZE_MULTIPLE, size[1] // SIZE_MULTIPLE * SIZE_MULTIPLE

    def hires_upscale_size(self) -> tuple[int, int]:
        """What the first pass's picture is upscaled to: the hires size, or, for a resize size of another aspect
        ratio, the base aspect ratio's size that covers it (A1111's rule; ``hires_crop`` then takes its middle)."""
        if not (self.hr_resize_x and self.hr_resize_y):
            return self.hires_size()
        x, y = self.hr_resize_x, self.hr_resize_y
        if self.width / self.height < x / y:
            return x, x * self.height // self.width
        return y * self.width // self.height, y

    def hires_crop(self) -> tuple[int, int]:
        """(left, top) of the hires size in the upscaled picture: the middle, in steps of 8 pixels as A1111 crops
        latents."""
        cover, size = self.hires_upscale_size(), self.hires_size()
        return tuple((c - s) // SIZE_MULTIPLE // 2 * SIZE_MULTIPLE for c, s in zip(cover, size, strict=True))


@dataclass
class Img2ImgRequest(GenerationRequest):
    """``width``/``height`` 0 = the input image's size rounded to multiples of 8."""

    image: Any = spec(None, a1111="init_images")  # PIL image
    strength: float = spec(0.75, label="Denoising strength", **STRENGTH_LIMIT)  # 0 keeps the image, 1 ignores it
    resize_mode: str = spec("Just resize", label="Resize mode")
    width: int = spec(0, **WIDTH)
    height: int = spec(0, **HEIGHT)

    task: ClassVar[str] = "img2img"


@inpaint_dataclass  # its inpaint_strategy follows these fields: backend.schema.inpaint_control
class InpaintRequest(Img2ImgRequest):
    """``mask`` white = repaint. ``inpaint_area`` "Only masked" works on a padded crop around the mask."""

    mask: Any = None  # PIL image
    mask_blur: int = spec(4, label="Mask blur", limit=lambda s: Limit(0, 64), infotext="Mask blur", preset=True)
    inpaint_area: str = spec("Whole picture", label="Inpaint area", infotext="Inpaint area",
                             written=only_masked(lambda r: r.inpaint_area), read=NOT_READ, a1111="inpaint_full_res")
    padding: int = spec(32, label="Masked area padding", limit=lambda s: Limit(0, 256), infotext="Masked area padding",
                        written=only_masked(lambda r: r.padding), read=NOT_READ, a1111="inpaint_full_res_padding")
    # Outpainting: grow the picture by these many pixels per side (backend.images.outpaint). The output is the grown
    # picture at its own size (width/height are set from it), the old pixels unchanged; the mask may then be empty.
    outpaint_left: int = spec(0, **OUTPAINT)
    outpaint_right: int = spec(0, **OUTPAINT)
    outpaint_up: int = spec(0, **OUTPAINT)
    outpaint_down: int = spec(0, **OUTPAINT)
    outpaint_fill: str = "Blurred edge"

    task: ClassVar[str] = "inpaint"

    @property
    def margins(self) -> Margins:
        return Margins(self.outpaint_left, self.outpaint_right, self.outpaint_up, self.outpaint_down)


@dataclass
class ControlUnit:
    """One ControlNet: its reference picture, how that becomes a control map, and how strongly it steers."""

    image: Any = None  # PIL image: a picture to preprocess, or a ready control map (preprocessor "none")
    control_type: str = "canny"  # which ControlNet: canny | depth | pose
    preprocessor: str = "auto"  # auto: the control type's detector; none: ``image`` already is the map
    conditioning_scale: float = spec(1.0, limit=lambda s: Limit(0.0, 2.0, 0.05))  # 0 = no effect
    # The fraction of the steps where the ControlNet starts acting, and where it stops.
    guidance_start: float = spec(0.0, limit=lambda s: Limit(0.0, 1.0, 0.01))
    guidance_end: float = spec(1.0, limit=lambda s: Limit(0.0, 1.0, 0.01))
    low_threshold: int = spec(100, limit=lambda s: Limit(1, 255))  # canny
    high_threshold: int = spec(200, limit=lambda s: Limit(1, 255))  # canny
    # The detector's working short side; 0 = the output's.
    detect_resolution: int = spec(
        0, limit=lambda s: Limit(0, max(s.max_width, s.max_height), MIN_DETECT_RESOLUTION)
    )
    pose_body: bool = True
    pose_hands: bool = False
    pose_face: bool = False

    def replace(self, **changes: Any) -> ControlUnit:
        return dataclasses.replace(self, **changes)


@dataclass
class ControlNetRequest(GenerationRequest):
    """ControlNet from noise, or from ``init_image`` with ``strength`` (img2img). Several units steer together.

    ``width``/``height`` 0 = the size of the init image if there is one, else of the first unit's picture.
    """

    units: tuple[ControlUnit, ...] = ()
    init_image: Any = spec(None, a1111="init_images")  # PIL image; None = start from noise
    strength: float = spec(0.75, label="Denoising strength",
                           written=lambda r: r.strength if r.init_image is not None else None, **STRENGTH_LIMIT)
    # The ControlNet sees no prompt: it recognises the content from the map alone.
    guess_mode: bool = spec(False, label="Guess mode", infotext="Guess mode", written=lambda r: r.guess_mode or None,
                            read=NOT_READ)
    resize_mode: str = spec("Crop and resize", label="Resize mode")  # how pictures and maps fit the output size
    width: int = spec(0, **WIDTH)
    height: int = spec(0, **HEIGHT)

    task: ClassVar[str] = "controlnet"


REQUEST_CLASSES: tuple[type[GenerationRequest], ...] = (
    Txt2ImgRequest,
    Img2ImgRequest,
    InpaintRequest,
    ControlNetRequest,
)


def field_limits(settings: Settings) -> dict[str, Limit]:
    """Every number field's range and step, from the settings: what the validator checks and the UI offers."""
    return collect_limits((*REQUEST_CLASSES, ControlUnit), settings)


@dataclass
class GenerationResult:
    images: list[Any]  # PIL images
    seeds: list[int]
    infotexts: list[str]
    request: GenerationRequest  # as run: seed resolved, model named
    paths: list[Path] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # task-specific, e.g. the inpaint mask used
    warnings: list[str] = field(default_factory=list)  # what the user should know, e.g. pictures not saved
    seconds: float = 0.0  # the run's wall time, queue wait excluded

    @property
    def infotext(self) -> str:
        return self.infotexts[0] if self.infotexts else ""
