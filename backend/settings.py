"""Limits and options, each overridable by an environment variable (``SDSTUDIO_<NAME>``).

Spaces and containers configure the app through the environment; the CLI in ``app.py``
overrides the same fields explicitly.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "SDSTUDIO_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sd-studio"


@dataclass(frozen=True)
class Settings:
    # Request limits (also the slider ranges in the UI).
    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_batch: int = 8
    max_guidance: float = 30.0
    grid_max_cells: int = 64  # cells one sampler grid may have (samplers × steps or CFG values)
    # Work one request may ask for: width × height × steps × pictures (a grid: summed over its cells).
    # 0 = the device's default (backend.models.devices.pixel_step_limit).
    max_pixel_steps: int = 0
    # Models.
    default_model: str = "SD 1.5"
    offline_model: str = "Demo shapes (offline)"
    models_file: Path = PROJECT_ROOT / "presets" / "models.json"
    max_models: int = 1  # models kept resident; the least recently used one is unloaded
    offline: bool = False  # never touch the network; only local folders and the local hub cache
    cache_dir: Path = field(default_factory=_default_cache_dir)  # built-in models are written here
    # Single-file checkpoints: folders scanned besides models/checkpoints (os.pathsep-separated), the per-family
    # config folders from_single_file reads (no weights), and whether pickle files (.ckpt; .pth upscalers too) may be
    # loaded (unsafe).
    checkpoints_dir: str = ""
    checkpoint_configs: Path = PROJECT_ROOT / "backend" / "configs"
    allow_pickle: bool = False
    vae_dir: str = ""  # VAE folders scanned besides models/vae (os.pathsep-separated)
    # FLUX / SD3 transformer-only files (.safetensors, .gguf) besides models/unet and models/diffusion_models, and
    # their text encoders (clip_l, clip_g, t5xxl) besides models/text_encoders and models/clip (os.pathsep-separated).
    unet_dir: str = ""
    text_encoder_dir: str = ""
    # LoRA and textual-inversion folders scanned besides models/loras and models/embeddings (os.pathsep-separated).
    lora_dirs: str = ""
    embedding_dirs: str = ""
    # Dynamic prompts: __name__ in a prompt reads <wildcards_dir>/name.txt (backend/generation/wildcards.py).
    wildcards_dir: Path = PROJECT_ROOT / "wildcards"
    # ControlNet preprocessor weights (depth, pose): a hub repository or a local folder with the same files.
    annotators: str = "lllyasviel/Annotators"
    # Image upscalers (Extras, hires fix): model files found in these folders, separated by the OS path separator.
    upscaler_dirs: str = "models/upscalers"
    adetailer_dirs: str = ""  # detail-pass detectors: folders scanned besides models/adetailer (os.pathsep-separated)
    # Device and memory.
    device: str = "auto"  # auto | cuda | mps | cpu
    dtype: str = "auto"  # auto | float16 | bfloat16 | float32
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False  # always; otherwise only for pictures over vae_tile_pixels
    vae_tile_pixels: int = 1536 * 1536  # decode larger pictures in tiles (memory); 0 = never by size
    channels_last: bool = False  # UNet in channels_last layout (slower on the CPU in the bench; try it on a GPU)
    compile_unet: bool = False  # torch.compile the UNet at load (minutes once; the log says how long)
    # auto | torch | openvino: OpenVINO runs the UNet and VAE decoder on the CPU. SDSTUDIO_BACKEND is the default
    # of a Settings built in code too (the test suite runs torch without auto's background conversions).
    backend: str = field(default_factory=lambda: os.environ.get(ENV_PREFIX + "BACKEND", "auto"))
    cpu_offload: bool = False
    xformers: bool = False
    # Presets and styles: shipped data in presets_dir; what users save goes to user_dir.
    presets_dir: Path = PROJECT_ROOT / "presets"
    user_dir: Path = Path("user")
    # Outputs and serving.
    output_dir: Path = Path("outputs")
    save_outputs: bool = True
    max_upload_mb: int = 20  # largest file a browser or API client may upload
    max_image_pixels: int = 4096 * 4096  # an uploaded picture with more pixels is refused before it is decoded
    cache_max_age: int = 3600  # seconds Gradio keeps uploads and served results in its cache
    queue_size: int = 16
    jobs_per_client: int = 4  # runs one page (session/login) or one address may have queued or running at once
    preview_every: int = 1  # decode a live preview every N steps (0 = never)
    # Where generation runs: "local" (in this process) or "ray" (a Ray Serve deployment; see backend/serving/remote.py).
    workers: str = "local"
    ray_address: str = ""  # an existing Ray cluster ("auto", "ray://head:10001"); empty = start a local one
    ray_replicas: int = 1  # engine replicas (the minimum when autoscaling)
    ray_max_replicas: int = 0  # above ray_replicas: autoscale up to this many; 0 = a fixed count
    ray_gpus_per_replica: float = -1.0  # -1 = one GPU each when the cluster has GPUs, else CPU replicas

    def __post_init__(self) -> None:
        # Accept str for path fields (CLI and tests pass plain strings).
        for f in dataclasses.fields(self):
            if f.type == "Path" and not isinstance(getattr(self, f.name), Path):
                object.__setattr__(self, f.name, Path(getattr(self, f.name)).expanduser())

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, defaults: dict[str, object] | None = None, **overrides: object
    ) -> Settings:
        """Build settings from ``defaults`` (e.g. a Space's profile), then ``SDSTUDIO_*`` variables, then explicit
        overrides (each later one wins)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = dict(defaults or {})
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, f.type)
        if "offline" not in values and env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            values["offline"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, type_name: object) -> object:
    kind = str(type_name)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
