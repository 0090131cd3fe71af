"""Inputs whose refusals name the field: pictures checked before Gradio decodes them, numbers and choices.

Gradio checks an input in its own preprocessing, before any handler runs: a non-picture, a truncated file or a
declared 30000×30000 PNG fails there with a generic error (or a long decode), `steps="abc"` with a generic error,
and a value out of range or not among the choices with a message that does not say which field. These subclasses
check a picture's header first (``backend.images.ops.check_picture_file``) and put the field's label before every
refusal. ``is_template`` makes Gradio use the parent's front-end component; they add no ``__init__`` (Gradio builds
a component's front-end config from its ``__init__`` signature).
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
from PIL import Image

from backend.images.ops import check_picture_file

from .events import refuse


def _check(label: str | None, path: str | None, max_pixels: int) -> None:
    if path:
        try:
            check_picture_file(path, max_pixels)
        except ValueError as err:
            raise refuse(f"{label or 'Picture'}: {err}") from None


def _decode(label: str | None, preprocess: Any, payload: Any) -> Any:
    try:
        return preprocess(payload)
    except (OSError, SyntaxError, ValueError):  # truncated or corrupt data past a valid header
        raise refuse(f"{label or 'Picture'}: this picture could not be decoded (truncated or corrupt file)") from None


# No __init__ of their own: Gradio builds a component's front-end config from its __init__ signature.
LIMIT_CLASS = "max-pixels-"


def _limit(component: gr.components.Component) -> int:
    """The component's pixel limit, read from its CSS classes: they are a constructor argument, so the limit survives
    Gradio rebuilding a session's copy of the component (``type(c)(**constructor_args)``) when an event updates its
    properties, as fitting the inpaint brush to the picture does. An instance attribute would be lost there."""
    for name in component.elem_classes or []:
        if name.startswith(LIMIT_CLASS):
            return int(name[len(LIMIT_CLASS) :])
    return 0


class PictureInput(gr.Image):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        if payload is not None:
            _check(self.label, getattr(payload, "path", None), _limit(self))
        return _decode(self.label, super().preprocess, payload)


class PictureEditor(gr.ImageEditor):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        if payload is not None:
            for part in (getattr(payload, "background", None), getattr(payload, "composite", None)):
                _check(self.label, getattr(part, "path", None), _limit(self))
        return _decode(self.label, super().preprocess, payload)


class ReferencePictures(gr.Gallery):
    """An upload gallery whose value is a tuple of RGB pictures (IP-Adapter's ``ip_adapter_image``), each checked
    and decoded as a ``PictureInput``'s picture."""

    is_template = True

    def preprocess(self, payload: Any) -> tuple[Image.Image, ...]:
        pictures = []
        for path, _caption in super().preprocess(payload) or []:
            _check(self.label, path, _limit(self))
            pictures.append(_decode(self.label, _open_rgb, path))
        return tuple(pictures)


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def picture_input(cls: type[PictureInput] | type[PictureEditor] | type[ReferencePictures], max_pixels: int,
                  **kwargs: Any) -> Any:
    """A ``PictureInput``, ``PictureEditor`` or ``ReferencePictures`` refusing pictures over ``max_pixels``."""
    classes = [*(kwargs.pop("elem_classes", None) or []), f"{LIMIT_CLASS}{max_pixels}"]
    return cls(elem_classes=classes, **kwargs)


def _named(label: str | None, preprocess: Any, payload: Any) -> Any:
    if isinstance(payload, float) and not math.isfinite(payload):  # JSON clients cannot send it; raw HTTP can
        raise refuse(f"{label}: {payload} is not a number here: give a finite value")
    try:
        return preprocess(payload)
    except gr.Error as err:
        raise refuse(f"{label}: {err.message}") from None
    except (TypeError, ValueError):  # e.g. steps="abc": Gradio's own conversion fails before any check
        raise refuse(f"{label}: {payload!r} is not a valid value here") from None


class FieldSlider(gr.Slider):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return _named(self.label, super().preprocess, payload)


class FieldNumber(gr.Number):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return _named(self.label, super().preprocess, payload)


class FieldDropdown(gr.Dropdown):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        if self.multiselect and isinstance(payload, str):  # one name given where a list is taken: a list of one
            payload = [payload]
        return _named(self.label, super().preprocess, payload)


class FieldRadio(gr.Radio):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return _named(self.label, super().preprocess, payload)
