"""What each request field is, beyond its type and default: the metadata every user of a field reads.

A field of a request dataclass (``backend.schema.requests``) is declared with ``spec(default, ...)``, which keeps a
``FieldSpec`` in the dataclass field's metadata: its limits (from ``Settings``), its UI label, the A1111 infotext key
and when it is written, whether presets may set it, whether "Send to …" carries it, and its name in the A1111 API.
The UI's controls and handler signatures, presets, Send, the infotext writer and reader and the A1111 conversion
read these instead of listing fields again, so a new field is declared once, here, and used where it acts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from backend.settings import Settings

SPEC_KEY = "sd_studio"


@dataclass(frozen=True)
class Limit:
    minimum: float
    maximum: float
    step: float = 1


@dataclass(frozen=True)
class FieldSpec:
    """``limit``: the field's range from the settings. ``infotext``: its A1111 key; ``written`` says what goes there
    for a request (None = left out; by default the value, left out when it is None or ""), ``read`` turns the text
    back into field values (by default the field's own type). ``common``: one of the controls every generating tab
    has (in declaration order: also the order of every tab's handler parameters and API keywords). ``preset``: a
    preset may set it. ``send``: "Send to …" and PNG info carry it to every tab (a tab's own fields go to the tabs
    that have them). ``absent_means_default``: the infotext leaves the field out at its default, so a text without it
    means the default. ``a1111``: the A1111 API's name, where it differs."""

    label: str = ""
    info: str = ""
    limit: Callable[[Settings], Limit] | None = None
    infotext: str = ""
    written: Callable[[Any], Any] | None = None
    read: Callable[[str], dict[str, Any]] | None = None
    common: bool = False
    preset: bool = False
    send: bool = False
    absent_means_default: bool = False
    a1111: str = ""


def spec(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with its ``FieldSpec``."""
    return dataclasses.field(default=default, default_factory=factory, metadata={SPEC_KEY: FieldSpec(**meta)})


def specs(cls: type) -> Iterator[tuple[dataclasses.Field, FieldSpec]]:
    """Each field of a request class with its spec (a field without one gets an empty spec), in declaration order."""
    for item in dataclasses.fields(cls):
        yield item, item.metadata.get(SPEC_KEY, FieldSpec())


def names_where(cls: type, test: Callable[[FieldSpec], Any]) -> tuple[str, ...]:
    return tuple(item.name for item, meta in specs(cls) if test(meta))


def field_spec(cls: type, name: str) -> FieldSpec:
    return next(meta for item, meta in specs(cls) if item.name == name)


def field_default(cls: type, name: str) -> Any:
    item = next(item for item in dataclasses.fields(cls) if item.name == name)
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()  # type: ignore[misc]


def collect_limits(classes: tuple[type, ...], settings: Settings) -> dict[str, Limit]:
    """Every field's limit over ``classes`` (a name shared by several classes has one limit)."""
    limits: dict[str, Limit] = {}
    for cls in classes:
        for item, meta in specs(cls):
            if meta.limit is not None and item.name not in limits:
                limits[item.name] = meta.limit(settings)
    return limits
