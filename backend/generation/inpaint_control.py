"""The ControlNet inpaint strategy's pipeline arguments (``backend.schema.inpaint_control``).

The inpaint ControlNet sees the picture with the repainted pixels set to -1 (diffusers' ``make_inpaint_condition``,
the A1111 ControlNet extension's ``inpaint_only``; white for the SDXL one: the family's ``inpaint_control_masked``).
A PIL picture cannot carry -1, so the control image is a tensor;
diffusers' control image processor passes a tensor through unnormalised, so the -1 reaches the ControlNet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.schema.errors import ValidationError
from backend.schema.inpaint_control import CONTROLNET_INPAINT, INPAINT_MODULE

WEIGHT = 1.0  # the extension's default unit weight


def uses_controlnet(request: Any) -> bool:
    return getattr(request, "inpaint_strategy", "") == CONTROLNET_INPAINT


def inpaint_condition(image: Image.Image, mask: Image.Image, masked: float = -1.0) -> torch.Tensor:
    """``image`` as floats in 0..1, (1, 3, H, W), with the pixels where ``mask`` (white = repaint) is over half set
    to ``masked`` (the family's ``inpaint_control_masked``)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    repaint = np.asarray(mask.convert("L").resize(image.size), dtype=np.float32) / 255.0 > 0.5
    pixels[repaint] = masked
    return torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())


def control_kwargs(request: Any, image: Image.Image, hard_mask: Image.Image, masked: float = -1.0) -> dict[str, Any]:
    """What the ControlNet inpaint pipeline takes besides the inpaint arguments ({} for another strategy)."""
    if not uses_controlnet(request):
        return {}
    if request.inpaint_area == "Only masked":
        # The pipeline crops PIL control images to the masked area but not tensors: the -1 map would not line up.
        raise ValidationError("inpaint_area", "ControlNet inpaint works on the whole picture; pick Whole picture")
    return {
        "control_image": inpaint_condition(image, hard_mask, masked),
        "controlnet_conditioning_scale": WEIGHT,
        "guess_mode": False,
    }


def infotext(request: Any) -> dict[str, str]:
    """The ControlNet extension's unit line for the strategy, as A1111 writes it ({} for another strategy)."""
    if not uses_controlnet(request):
        return {}
    return {"ControlNet 0": f"Module: {INPAINT_MODULE}, Model: inpaint, Weight: {WEIGHT:g}, Guidance Start: 0, "
                            "Guidance End: 1"}
