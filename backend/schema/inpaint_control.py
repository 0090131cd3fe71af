"""The inpaint tab's choice of strategy (issue #29): the model's own way, or the inpaint ControlNet.

``inpaint_dataclass`` makes ``InpaintRequest`` a dataclass with ``inpaint_strategy`` after its own fields (as
``backend.schema.detail`` does for the detail pass), so the UI, infotext and A1111 conversion derive from its spec.
"auto" runs the model's inpainting UNet where it has one, else latent blending; ``CONTROLNET_INPAINT`` runs the
model's own UNet with the inpaint ControlNet (``control_v11p_sd15_inpaint``), whose control image is the picture with
the masked pixels set to -1, as the A1111 ControlNet extension's ``inpaint_only`` preprocessor makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.schema.fields import spec

AUTO = "auto"
CONTROLNET_INPAINT = "ControlNet inpaint"  # also the families' strategy name (backend.families.base)
INPAINT_STRATEGIES = (AUTO, CONTROLNET_INPAINT)
INPAINT_CONTROL_TYPE = "inpaint"  # its ControlNet's key under ``controlnets`` in presets/models.json
INPAINT_MODULE = "inpaint_only"  # the ControlNet extension's preprocessor (module) name for it

STRATEGY = spec(AUTO, label="Inpaint strategy", infotext="Inpaint strategy",
                info="auto: the model's inpainting UNet if it has one, else latent blending. ControlNet inpaint: "
                     "its own UNet steered by the inpaint ControlNet (listed under controlnets.inpaint).",
                written=lambda r: r.inpaint_strategy if r.inpaint_strategy != AUTO else None,
                send=True, absent_means_default=True)


def inpaint_dataclass(cls: type) -> type:
    """``dataclass(cls)`` with ``inpaint_strategy`` appended after the fields ``cls`` declares."""
    cls.__annotations__["inpaint_strategy"] = "str"
    cls.inpaint_strategy = STRATEGY  # type: ignore[attr-defined]
    return dataclass(cls)

