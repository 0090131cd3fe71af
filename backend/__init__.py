"""SD Studio's backend, and its public face: what scripts, benchmarks and other programs import.

    from backend import Engine, Settings, Txt2ImgRequest, ValidationError

    engine = Engine(Settings(offline=True))
    # The demo model draws 64×64 at CFG 2.5 (its defaults in presets/models.json; a request's own are SD-sized).
    request = Txt2ImgRequest(prompt="a red circle on a blue background", model="Demo shapes (offline)", seed=1,
                             width=64, height=64, steps=20, guidance_scale=2.5)
    result = engine.run(request)
    result.images[0].save("circle.png")  # its parameters are in result.infotext (and in the PNG)

These names stay stable; everything else may move between modules. They are loaded on first use, so importing a
light part (``backend.schema``) does not load torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "backend.generation.engine",
    "StepEvent": "backend.generation.pipeline_call",
    "Cancelled": "backend.generation.interrupt",
    "Settings": "backend.settings",
    "GenerationRequest": "backend.schema.requests",
    "Txt2ImgRequest": "backend.schema.requests",
    "Img2ImgRequest": "backend.schema.requests",
    "InpaintRequest": "backend.schema.requests",
    "ControlNetRequest": "backend.schema.requests",
    "ControlUnit": "backend.schema.requests",
    "GenerationResult": "backend.schema.requests",
    "ValidationError": "backend.schema.errors",
    "GridRequest": "backend.grid.plan",
    "GridRunner": "backend.grid.runner",
    "ModelUnavailable": "backend.models.pipelines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'backend' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
