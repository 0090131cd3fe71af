"""The IP-Adapter request fields (issue #29): an adapter file, its weight and the reference pictures.

``ip_adapter_fields`` adds them to ``GenerationRequest`` before ``detailed_dataclass`` makes it a dataclass, so every
task has them; they are not common controls: the txt2img, img2img and ControlNet tabs show them in an "IP-Adapter"
accordion built from these specs (``ui.ip_adapter``), the A1111 API's ControlNet units with an ``ip-adapter_*``
module set them (``api.controlnet_units``), and the infotext records the adapter and weight (not the pictures).
``ip_adapter`` names a file in ``models/ipadapter`` without its extension; "None" is off.
The loading is ``backend.generation.ip_adapter``.
"""

from __future__ import annotations

from typing import Any

from backend.schema.fields import Limit, spec

OFF = "None"
A1111 = "alwayson_scripts.controlnet.args[0]."  # where an A1111 caller sends them (an ip-adapter_* unit)


def is_on(request: Any) -> bool:
    return getattr(request, "ip_adapter", OFF) not in ("", OFF)


IP_ADAPTER_FIELDS: dict[str, tuple[str, Any]] = {
    "ip_adapter": ("str", spec(OFF, label="IP-Adapter", infotext="IP-Adapter", a1111=A1111 + "model",
                               info="An adapter in models/ipadapter: the reference pictures steer like a prompt.",
                               written=lambda r: r.ip_adapter if is_on(r) else None, absent_means_default=True)),
    "ip_adapter_weight": ("float", spec(1.0, label="IP-Adapter weight", infotext="IP-Adapter weight",
                                        a1111=A1111 + "weight", limit=lambda s: Limit(0.0, 2.0, 0.05),
                                        written=lambda r: r.ip_adapter_weight if is_on(r) else None,
                                        absent_means_default=True)),
    # PIL pictures (a tuple: one or more); not written to the infotext.
    "ip_adapter_image": ("Any", spec((), label="IP-Adapter reference pictures", a1111=A1111 + "image",
                                     info="One or more pictures whose content and style steer the result.",
                                     read=lambda text: {})),
}


def ip_adapter_fields(cls: type) -> type:
    """``cls`` with the IP-Adapter fields appended (``dataclass`` is applied by the next decorator)."""
    for name, (kind, value) in IP_ADAPTER_FIELDS.items():
        cls.__annotations__[name] = kind
        setattr(cls, name, value)
    return cls
