"""Which fields play which part, read from the schema: the lists the UI, presets, Send and the APIs use.

Nothing here is a list of names: each answer comes from the fields' ``FieldSpec`` (backend.schema.fields).
"""

from __future__ import annotations

from typing import Any

from backend.schema.fields import field_default, specs
from backend.schema.requests import REQUEST_CLASSES, GenerationRequest


def _over_requests(test) -> tuple[str, ...]:
    names: list[str] = []
    for cls in REQUEST_CLASSES:
        names += [item.name for item, meta in specs(cls) if test(meta) and item.name not in names]
    return tuple(names)


def common_fields() -> tuple[str, ...]:
    """The controls every generating tab has, in the order of every tab's handler parameters and API keywords."""
    return tuple(item.name for item, meta in specs(GenerationRequest) if meta.common)


def preset_fields() -> tuple[str, ...]:
    """The fields a preset may set (not the prompt, seed or pictures: those are the user's own)."""
    return _over_requests(lambda meta: meta.preset)


def carried_fields() -> tuple[str, ...]:
    """The fields "Send to …" and PNG info carry to every tab (size and a tab's own fields: see ui/send.py)."""
    return tuple(item.name for item, meta in specs(GenerationRequest) if meta.send)


def absent_defaults() -> dict[str, Any]:
    """Field → the value an infotext without its key means (the key is written only away from the default)."""
    defaults: dict[str, Any] = {}
    for cls in REQUEST_CLASSES:
        for item, meta in specs(cls):
            if meta.absent_means_default:
                defaults.setdefault(item.name, field_default(cls, item.name))
    return defaults


def a1111_names() -> dict[str, str]:
    """Our field name → the A1111 API's, where they differ (so a refusal names the field the caller sent)."""
    names: dict[str, str] = {}
    for cls in REQUEST_CLASSES:
        for item, meta in specs(cls):
            if meta.a1111:
                names.setdefault(item.name, meta.a1111)
    return names
