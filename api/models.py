"""Request and response bodies with A1111's field names and defaults (its ``modules/api/models.py``).

Unknown fields are ignored, as A1111 does. Fields SD Studio has no counterpart for are accepted and ignored
(``restore_faces``, ``tiling``…); the ones that would change the picture and cannot be honoured are
refused by ``api.convert`` with a message naming them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerationBody(_Body):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1  # A1111's "Extra" seed row: variation seed, its strength, seed resize (0 or -1 = off)
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None  # "Euler a", or a combined name such as "DPM++ 2M Karras"
    sampler_index: str = "Euler"  # the older name of sampler_name
    scheduler: str | None = None  # "automatic", "karras", … (A1111's names or labels)
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    distilled_cfg_scale: float | None = None  # Forge's name: FLUX.1 dev's distilled guidance (None = 3.5)
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None  # the id /progress and /interrupt take when the server has no login


class Txt2ImgBody(GenerationBody):
    enable_hr: bool = False
    denoising_strength: float | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgBody(GenerationBody):
    init_images: list[str] | None = None  # base64 pictures (data URLs too); the first one is used
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent upscale)
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None  # base64 mask: white = repaint; present = inpaint
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0  # accepted; SD Studio always starts from the original (A1111's 1)
    inpaint_full_res: bool = True  # True = "Only masked"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0  # 1 = repaint the black part
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class ImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="base64 PNG pictures with their parameters")
    parameters: dict[str, Any]
    info: str = Field(description="JSON: infotexts, seed, all_seeds, prompt, … as A1111 returns them")


class PngInfoBody(_Body):
    image: str = Field(description="base64 picture")


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None


class TaskBody(_Body):
    id_task: str | None = None  # which of the caller's jobs; the login (if any) must own it


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class ModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class StyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentModeItem(BaseModel):
    name: str


class ExtrasBody(_Body):
    """A1111's ``extra-single-image``: only the upscaler part (no face restoration)."""

    image: str = Field(description="base64 picture")
    resize_mode: int = 0  # 0 scale by upscaling_resize; 1 (to a size) is refused
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class ExtrasResponse(BaseModel):
    html_info: str
    image: str


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, Any] = Field(default_factory=dict)
    skipped: dict[str, Any] = Field(default_factory=dict)


class DetectBody(_Body):
    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] = Field(default_factory=list)  # the name webuiapi sends
    controlnet_processor_res: int = 512
    controlnet_threshold_a: float = 64
    controlnet_threshold_b: float = 64


class ErrorResponse(BaseModel):
    error: str
    detail: Any
    body: Any
    errors: str


class VaeItem(BaseModel):
    """``sd-vae`` and ``sd-modules`` entries."""

    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: str | None = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None = None


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any | None = None
    minimum: Any | None = None
    maximum: Any | None = None
    step: Any | None = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg] = Field(default_factory=list)


class BatchImage(_Body):
    data: str = Field(description="base64 picture")
    name: str = ""


class ExtrasBatchBody(ExtrasBody):
    """A1111's ``extra-batch-images``: the ``extra-single-image`` fields, with ``imageList`` for ``image``."""

    image: str = ""  # not used: the pictures are in imageList
    imageList: list[BatchImage] = Field(default_factory=list)  # A1111's name


class ExtrasBatchResponse(BaseModel):
    html_info: str
    images: list[str]


class InterrogateBody(_Body):
    image: str = ""
    model: str = "clip"


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]
