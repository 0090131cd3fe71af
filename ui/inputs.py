"""Picture inputs that refuse bad uploads with a message naming the field, before Gradio decodes them.

Gradio decodes an upload in its own preprocessing, where a non-picture, a truncated file or a declared 30000×30000
PNG fails with a generic error (or a long decode). These subclasses check the file's header first
(``backend.images.check_picture_file``) and turn decoding failures into messages. ``is_template`` makes Gradio use
the parent's front-end component.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from backend.images import check_picture_file


def _check(label: str | None, path: str | None, max_pixels: int) -> None:
    if path:
        try:
            check_picture_file(path, max_pixels)
        except ValueError as err:
            raise gr.Error(f"{label or 'Picture'}: {err}") from None


def _decode(label: str | None, preprocess: Any, payload: Any) -> Any:
    try:
        return preprocess(payload)
    except (OSError, SyntaxError, ValueError):  # truncated or corrupt data past a valid header
        raise gr.Error(f"{label or 'Picture'}: this picture could not be decoded (truncated or corrupt file)") from None


# No __init__ of their own: Gradio builds a component's front-end config from its __init__ signature.
class PictureInput(gr.Image):
    is_template = True
    max_pixels = 0  # set by picture_input

    def preprocess(self, payload: Any) -> Any:
        if payload is not None:
            _check(self.label, getattr(payload, "path", None), self.max_pixels)
        return _decode(self.label, super().preprocess, payload)


class PictureEditor(gr.ImageEditor):
    is_template = True
    max_pixels = 0  # set by picture_input

    def preprocess(self, payload: Any) -> Any:
        if payload is not None:
            for part in (getattr(payload, "background", None), getattr(payload, "composite", None)):
                _check(self.label, getattr(part, "path", None), self.max_pixels)
        return _decode(self.label, super().preprocess, payload)


def picture_input(cls: type[PictureInput] | type[PictureEditor], max_pixels: int, **kwargs: Any) -> Any:
    """A ``PictureInput`` or ``PictureEditor`` refusing pictures over ``max_pixels``."""
    component = cls(**kwargs)
    component.max_pixels = max_pixels
    return component
