"""The inpaint tab: paint the area to repaint on the picture (white = repaint), or upload a mask."""

from __future__ import annotations

import gradio as gr

from backend.images.ops import mask_overlay
from backend.schema.choices import INPAINT_AREAS
from backend.schema.fields import field_default
from backend.schema.inpaint_control import INPAINT_STRATEGIES
from backend.schema.requests import InpaintRequest, field_limits

from .common import build_common_controls
from .controls import field_slider, words
from .editor import split_editor_value
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, tab_handler
from .inputs import FieldRadio, PictureEditor, PictureInput, picture_input
from .outpaint import build_outpaint
from .output import build_output_block
from .prompt import build_prompt_section
from .send import sent_fields
from .studio import Studio
from .tab_img2img import build_resize_mode, build_strength
from .wiring import wire_generation


def mask_brush(short_side: int) -> gr.Brush:
    """White at half opacity, so the picture shows through the stroke (any painted alpha counts as mask), sized to
    about 1/12 of the short side of the pictures the startup model draws (a 16 px stroke at least). Gradio's
    editor has no brush relative to the uploaded picture ("auto" is a fixed 25 px), and a size sent from the
    server after the upload arrives late on a busy server and wipes the strokes already painted, so the size is
    fixed when the page is built."""
    # Gradio's default_size is the radius: a stroke is twice as wide.
    return gr.Brush(colors=[("#FFFFFF", 0.5)], color_mode="fixed", default_size=max(8, round(short_side / 24)))


def build_pictures(studio: Studio, prefix: str = "inpaint") -> dict[str, gr.components.Component]:
    """The editor to paint the mask on, and the upload of a ready mask (it wins over painted strokes); the ControlNet
    tab builds them too, for its inpaint control type."""
    max_pixels = studio.engine.settings.max_image_pixels
    defaults = studio.engine.registry.get(studio.engine.default_model).defaults
    editor = picture_input(
        PictureEditor,
        label="Image — paint the area to repaint",
        max_pixels=max_pixels,
        type="pil",
        format="png",
        image_mode="RGBA",
        brush=mask_brush(min(defaults.width, defaults.height)),
        layers=False,
        transforms=(),
        elem_id=f"{prefix}-editor",
    )
    with gr.Accordion("Upload a mask instead (white = repaint)", open=False):
        mask = picture_input(
            PictureInput,
            label="Mask",
            max_pixels=max_pixels,
            type="pil",
            image_mode="L",
            format="png",
            elem_id=f"{prefix}-mask",
        )
    return {"image": editor, "mask": mask}


def build_options(studio: Studio) -> dict[str, gr.components.Component]:
    """Strength, mask blur, padding, inpaint area and resize mode, by field name in the handler's order."""
    limits = field_limits(studio.engine.settings)
    strength = build_strength(studio, "inpaint", InpaintRequest)
    with gr.Row():
        mask_blur = field_slider(
            "mask_blur",
            limits,
            "inpaint-mask-blur",
            cls=InpaintRequest,
            info="Pixels of feathering at the mask's edge, so the new part blends in.",
        )
        # A1111's label (the schema's is the infotext's "Masked area padding"). Steps of 4 on the slider; the API
        # takes any whole number in range.
        padding = field_slider(
            "padding", limits, "inpaint-padding", cls=InpaintRequest, label="Only masked padding", step=4
        )
    area = FieldRadio(
        list(INPAINT_AREAS),
        value=field_default(InpaintRequest, "inpaint_area"),
        elem_id="inpaint-area",
        **words("inpaint_area", InpaintRequest),
    )
    return {
        "strength": strength,
        "mask_blur": mask_blur,
        "inpaint_area": area,
        "padding": padding,
        "resize_mode": build_resize_mode("inpaint", InpaintRequest),
    }


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            section = build_prompt_section(studio, "inpaint")
            pictures = build_pictures(studio)
            options = build_options(studio)
            outpaint = build_outpaint(studio)
            strategy = {"inpaint_strategy": FieldRadio(
                list(INPAINT_STRATEGIES), value=field_default(InpaintRequest, "inpaint_strategy"),
                elem_id="inpaint-strategy", **words("inpaint_strategy", InpaintRequest),
            )}
            controls = build_common_controls(studio, "inpaint", size_from_image=True, prompt_section=section)
        with gr.Column(scale=1):
            out = build_output_block("inpaint")
            mask_used = gr.Image(
                label="Mask used (tinted = repainted)",
                type="pil",
                format="png",
                interactive=False,
                elem_id="inpaint-mask-used",
            )

    def inpaint(values, request, progress):
        """Repaint the masked area (white) of an image; everything outside the mask is kept. ``outpaint_*``: grow
        the picture by that many pixels per side and generate the new area (the mask may then be empty)."""
        picture, painted = split_editor_value(values["image"], values["mask"])
        req = build_request(InpaintRequest, values, image=picture, mask=painted)
        yield from stream_generation(studio, req, request, progress, mask_shown, tab="inpaint")

    def mask_shown(result):
        """The mask as it was used, tinted over the first picture (its pixels elsewhere unchanged)."""
        if result is None or result.extras.get("mask") is None:
            return (None,)
        return (mask_overlay(result.images[0], result.extras["mask"]),)

    # The pictures and options are required parameters; the outpainting ones and the strategy optional.
    own = pictures | options | outpaint | strategy
    handler = tab_handler(inpaint, InpaintRequest, controls.fields, (*pictures, *options), (*outpaint, *strategy))
    wire_generation(studio, controls, out, handler, own, api_name="inpaint", extra_outputs=[mask_used])
    return TabHandle("inpaint", controls, out, pictures["image"], sent_fields(InpaintRequest, own))
