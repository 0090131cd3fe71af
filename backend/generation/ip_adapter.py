"""IP-Adapter (issue #29): load the request's adapter into the model's UNet for a run, and take it out again.

The adapter files are in ``models/ipadapter`` (or ``SDSTUDIO_IPADAPTER_DIR``): ``NAME.safetensors`` with the
``image_proj.*`` and ``ip_adapter.*`` keys diffusers' ``load_ip_adapter`` reads (``ip-adapter_sd15.safetensors`` …),
and the CLIP vision encoder in ``models/ipadapter/image_encoder`` (a ``CLIPVisionModelWithProjection`` folder).
Every pipeline derived from a model shares its UNet, so the adapter's state lives on the UNet: a request without
an adapter after one with it gets the UNet's own attention processors back, so its pixels are the base pixels.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from backend.schema.detail import OFF
from backend.schema.errors import ValidationError
from backend.schema.ip_adapter import is_on
from backend.settings import PROJECT_ROOT

STATE = "_sd_studio_ip_adapter"  # the UNet attribute holding what is loaded into it
ENCODER = "image_encoder"  # the encoder's folder under the adapter folder


_HOLDING: weakref.WeakSet = weakref.WeakSet()  # the UNets with an adapter in them now


@dataclass
class Loaded:
    name: str
    processors: dict[str, Any]  # the UNet's own attention processors, put back on unload
    encoder: Any
    processor: Any


def adapter_dir() -> Path:
    folder = Path(os.environ.get("SDSTUDIO_IPADAPTER_DIR", "models/ipadapter"))
    return folder if folder.is_absolute() else PROJECT_ROOT / folder


def adapter_names() -> list[str]:
    """The adapters in the folder (file names without .safetensors)."""
    return sorted(p.stem for p in adapter_dir().glob("*.safetensors"))


def _files(name: str) -> tuple[Path, Path]:
    folder = adapter_dir()
    file, encoder = folder / f"{name}.safetensors", folder / ENCODER
    if not file.is_file():
        have = ", ".join(adapter_names()) or "none"
        raise ValidationError("ip_adapter", f"no IP-Adapter {name!r} in {folder} (put {name}.safetensors there; "
                                            f"have: {have})")
    if not (encoder / "config.json").is_file():
        raise ValidationError("ip_adapter", f"the IP-Adapter's CLIP image encoder is missing: put its folder "
                                            f"(CLIPVisionModelWithProjection: config.json and weights) in {encoder}")
    return file, encoder


def _restore(unet: Any) -> None:
    loaded: Loaded | None = getattr(unet, STATE, None)
    if loaded is None:
        return
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = None
    unet.set_attn_processor(loaded.processors)
    setattr(unet, STATE, None)
    _HOLDING.discard(unet)


def unload(pipe: Any) -> None:
    """Take any adapter out of ``pipe``'s UNet (shared by the model's pipelines) and out of every other UNet holding
    one (an inpainting UNet's pipeline may run next: the detail pass's)."""
    for unet in {getattr(pipe, "unet", None), *_HOLDING} - {None}:
        _restore(unet)
    if hasattr(pipe, "image_encoder"):
        pipe.image_encoder, pipe.feature_extractor = None, None


def _load(pipe: Any, name: str) -> Loaded:
    file, encoder_dir = _files(name)
    unet = pipe.unet
    encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_dir, dtype=unet.dtype).to(unet.device)
    processor = CLIPImageProcessor.from_pretrained(encoder_dir)
    weights = load_file(str(file))
    state = {part: {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(part + ".")}
             for part in ("image_proj", "ip_adapter")}
    if not state["image_proj"] or not state["ip_adapter"]:
        raise ValidationError("ip_adapter", f"{file.name} is no IP-Adapter file (no image_proj/ip_adapter keys)")
    loaded = Loaded(name, dict(unet.attn_processors), encoder, processor)
    pipe.image_encoder, pipe.feature_extractor = encoder, processor  # so load_ip_adapter loads no encoder itself
    try:
        pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)
    except (RuntimeError, ValueError, KeyError) as err:
        setattr(unet, STATE, loaded)
        _restore(unet)
        pipe.image_encoder, pipe.feature_extractor = None, None
        raise ValidationError("ip_adapter", f"{file.name} does not fit this model: {err}") from err
    setattr(unet, STATE, loaded)
    _HOLDING.add(unet)
    return loaded


def apply(pipe: Any, request: Any) -> dict[str, Any]:
    """Give ``pipe`` the request's adapter (or none) and return the pipeline arguments it takes."""
    unet = getattr(pipe, "unet", None)
    current: Loaded | None = getattr(unet, STATE, None)
    if not is_on(request):
        unload(pipe)
        return {}
    if current is not None and current.name != request.ip_adapter:
        unload(pipe)
        current = None
    second_passes = {"enable_hr": getattr(request, "enable_hr", False), "ad_model": request.ad_model not in ("", OFF)}
    for field, on in second_passes.items():
        if on:  # their second passes run the UNet without the pictures' embeddings
            raise ValidationError(field, f"IP-Adapter does not work with {field} yet; turn one of them off")
    if not request.ip_adapter_image:
        raise ValidationError("ip_adapter_image", "IP-Adapter needs one or more reference pictures")
    loaded = current or _load(pipe, request.ip_adapter)
    pipe.image_encoder, pipe.feature_extractor = loaded.encoder, loaded.processor  # a derived pipeline's own slots
    pipe.set_ip_adapter_scale(request.ip_adapter_weight)
    pictures = [image.convert("RGB") for image in request.ip_adapter_image]
    return {"ip_adapter_image": [pictures]}  # one adapter, several pictures
