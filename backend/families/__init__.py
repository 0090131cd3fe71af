"""Model families: one module per family says how its models load, which pipelines they use, how prompts are
encoded and what they support. The loaders and the engine ask the family (``family(spec.family)``) instead of
testing family names, so what a family cannot do is refused by field name and a new family touches no other.

Detection goes through here too: diffusers' ``infer_diffusers_model_type`` names a checkpoint's model type, and
``for_model_type`` says which family claims it (like ComfyUI's ``supported_models``, a family declares what it
matches).

Importing this package imports no torch and no diffusers (pipeline classes are named by string).

Adding a family: write ``backend/families/<name>.py`` with a module-level ``FAMILY = Family(...)`` (see
``base.Family``) declaring at least its ``name``, ``label``, the diffusers ``model_types`` it claims (and which of
them are 9-channel inpainting UNets), its ``single_file_pipeline`` class name; and, where they differ from the
defaults, its prediction type, ``pretrained_kwargs``, text encoders, the optional request fields it ``supports``
or ``ignores``, its ``tasks``, ``controlnet_types``, ``inpaint_strategies`` and ``grid_batching``. A family whose
refusals need more than these declarations overrides ``unsupported``. Add the module to ``_MODULES`` below. Then
give it a ``families.<name>`` entry in ``presets/models.json`` (``width``, ``height``, ``steps``,
``guidance_scale``, ``latent_rgb_factors`` for live previews, optionally ``controlnets``: control type → source)
and its models under ``models`` with ``"family": "<name>"``; single files need a config folder
``backend/configs/<name>`` (the diffusers configs and tokenizer configs, no weights).
"""

from __future__ import annotations

from backend.families import chroma, flux, sd2, sd3, sd15, sdxl
from backend.families.base import OPTIONS, Family

__all__ = ["FAMILIES", "OPTIONS", "Family", "family", "for_model_type", "labels", "model_types", "names", "register"]

_MODULES = (sd15, sd2, sdxl, sd3, flux, chroma)  # in the order the families are listed to people

FAMILIES: dict[str, Family] = {}


def register(new: Family) -> Family:
    """Add a family; its name and each of its model types must be new (a model type belongs to one family)."""
    if new.name in FAMILIES:
        raise ValueError(f"model family {new.name!r} is registered twice")
    claimed = model_types()
    for model_type in new.model_types:
        if model_type in claimed:
            raise ValueError(f"model type {model_type!r} of {new.name} is claimed by {claimed[model_type][0]} too")
    FAMILIES[new.name] = new
    return new


def family(name: str) -> Family:
    """The family called ``name`` (a model's ``family`` in presets/models.json)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def model_types() -> dict[str, tuple[str, bool]]:
    """diffusers' model type → (the family that claims it, whether its UNet is a 9-channel inpainting one)."""
    return {kind: (f.name, inpainting) for f in FAMILIES.values() for kind, inpainting in f.model_types.items()}


def for_model_type(model_type: str) -> tuple[Family, bool] | None:
    """The family of a checkpoint whose model type diffusers detected, and whether it is an inpainting UNet;
    None for a model type no family runs."""
    for f in FAMILIES.values():
        if model_type in f.model_types:
            return f, f.model_types[model_type]
    return None


def labels() -> str:
    """The families whose single checkpoint files load, for a message: "SD 1.x, SD 2.x and SDXL"."""
    all_labels = [f.label for f in FAMILIES.values() if f.model_types]
    return " and ".join(filter(None, [", ".join(all_labels[:-1]), *all_labels[-1:]]))


for _module in _MODULES:
    register(_module.FAMILY)
