"""FLUX.1 Fill: a transformer that inpaints by reading the mask and the masked picture beside its latents.

A Fill transformer's ``img_in`` takes the packed latents, the packed latents of the masked picture and the packed
mask (one channel per picture pixel of a latent patch): 64 + 64 + 256 = 384 channels for FLUX.1 Fill dev, against 64
for dev and 128 (latents + control latents) for FLUX.1 Depth/Canny. So "more than twice its output channels" tells a
Fill transformer from the others at any size (the tiny test one too), from a loaded config or a file's shapes.

Its inpaint pipeline is diffusers' ``FluxFillPipeline`` (the family's ``task_pipelines["fill"]``), wrapped here so it
takes the arguments every FLUX inpaint run gets: it has no true CFG, negative prompt or "Only masked" crop.
"""

from __future__ import annotations

from typing import Any

import diffusers
from diffusers import FluxFillPipeline

from backend.models.dit_keys import is_fill_channels
from backend.schema.errors import ValidationError

FILL_TASK = "fill"  # the key of a family's Fill inpaint pipeline in ``Family.task_pipelines``


def is_fill_transformer(transformer: Any) -> bool:
    """A loaded transformer (None: a UNet model) whose config says it is a Fill one."""
    config = getattr(transformer, "config", None)
    if config is None or "in_channels" not in config:
        return False
    return is_fill_channels(config["in_channels"], config.get("out_channels"))


def text2img_class(class_name: str) -> str:
    """The text2img pipeline a hub / folder model saved as ``class_name`` loads as ("": AutoPipeline's choice).

    A Fill repo's model_index names FluxFillPipeline, which AutoPipeline maps to no text2img task; its modules are
    FluxPipeline's."""
    return "FluxPipeline" if class_name == FluxFillPipeline.__name__ else ""


class FillInpaintPipeline(FluxFillPipeline):
    """``FluxFillPipeline`` taking the FLUX inpaint arguments it lacks: a negative prompt only acts with true CFG, which
    it has not (CFG above 1 is refused by field name), and the "Only masked" crop is refused likewise."""

    @classmethod
    def from_pipe(cls, pipeline: Any, **components: Any) -> FillInpaintPipeline:
        """The same modules, as AutoPipeline's ``from_pipe`` shares them: DiffusionPipeline's casts them to a dtype,
        which a GGUF-quantized transformer refuses."""
        expected, _ = cls._get_signature_keys(cls)
        return cls(**{name: components.get(name, pipeline.components.get(name)) for name in expected})

    def __call__(
        self,
        *args: Any,
        negative_prompt: Any = None,
        true_cfg_scale: float = 1.0,
        padding_mask_crop: int | None = None,
        **kwargs: Any,
    ) -> Any:
        if true_cfg_scale > 1:
            raise ValidationError(
                "guidance_scale", "FLUX Fill models have no true CFG: set CFG scale to 1 (Distilled CFG guides them)"
            )
        if padding_mask_crop is not None:
            raise ValidationError("inpaint_area", "FLUX Fill models inpaint the whole picture: pick Whole picture")
        return super().__call__(*args, **kwargs)


# Pipelines a family names that run through a wrapper here.
WRAPPED: dict[str, type] = {FluxFillPipeline.__name__: FillInpaintPipeline}


def task_class(name: str) -> Any:
    """The pipeline class a family's ``task_pipelines`` entry ``name`` runs as."""
    return WRAPPED.get(name) or getattr(diffusers, name)
