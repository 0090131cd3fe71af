"""The inpaint tab: paint the area to repaint on the picture (white = repaint), or upload a mask."""

from __future__ import annotations

import gradio as gr

from backend.images import RESIZE_MODES, mask_overlay
from backend.requests import INPAINT_AREAS, InpaintRequest, field_limits

from .common import (
    Studio,
    TabHandle,
    build_common_controls,
    build_output_block,
    build_prompt_section,
    build_request,
    limit_slider,
    stream_generation,
    wire_generation,
)
from .editor import split_editor_value
from .inputs import FieldRadio, PictureEditor, PictureInput, picture_input
from .outpaint import build_outpaint
from .tab_img2img import build_strength


def mask_brush(short_side: int) -> gr.Brush:
    """White at half opacity, so the picture shows through the stroke (any painted alpha counts as mask), sized to
    about 1/12 of the short side of the pictures the startup model draws (a 16 px stroke at least). Gradio's
    editor has no brush relative to the uploaded picture ("auto" is a fixed 25 px), and a size sent from the
    server after the upload arrives late on a busy server and wipes the strokes already painted, so the size is
    fixed when the page is built."""
    # Gradio's default_size is the radius: a stroke is twice as wide.
    return gr.Brush(colors=[("#FFFFFF", 0.5)], color_mode="fixed", default_size=max(8, round(short_side / 24)))


def build_tab(studio: Studio) -> TabHandle:
    limits = field_limits(studio.engine.settings)
    spec = studio.engine.registry.get(studio.engine.default_model)
    with gr.Row():
        with gr.Column(scale=1):
            section = build_prompt_section(studio, "inpaint")
            editor = picture_input(
                PictureEditor,
                label="Image — paint the area to repaint",
                max_pixels=studio.engine.settings.max_image_pixels,
                type="pil",
                format="png",
                image_mode="RGBA",
                brush=mask_brush(min(spec.defaults.width, spec.defaults.height)),
                layers=False,
                transforms=(),
                elem_id="inpaint-editor",
            )
            with gr.Accordion("Upload a mask instead (white = repaint)", open=False):
                mask = picture_input(
                    PictureInput,
                    label="Mask",
                    max_pixels=studio.engine.settings.max_image_pixels,
                    type="pil",
                    image_mode="L",
                    format="png",
                    elem_id="inpaint-mask",
                )
            strength = build_strength(studio, "inpaint")
            with gr.Row():
                mask_blur = limit_slider(
                    "Mask blur",
                    limits["mask_blur"],
                    4,
                    "inpaint-mask-blur",
                    info="Pixels of feathering at the mask's edge, so the new part blends in.",
                )
                # Steps of 4 on the slider; the API takes any whole number in range.
                padding = limit_slider("Only masked padding", limits["padding"], 32, "inpaint-padding", step=4)
            inpaint_area = FieldRadio(
                list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area", elem_id="inpaint-area"
            )
            resize_mode = FieldRadio(
                list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode", elem_id="inpaint-resize-mode"
            )
            outpaint = build_outpaint(studio)
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

    def inpaint(
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        guidance_scale: float,
        width: int,
        height: int,
        batch_size: int,
        sampler: str,
        schedule: str,
        model: str,
        styles: list[str] | None,
        vae: str,
        skip_cfg_after: float,
        deep_cache: int,
        image,
        mask,
        strength: float,
        mask_blur: int,
        inpaint_area: str,
        padding: int,
        resize_mode: str,
        outpaint_left: int = 0,
        outpaint_right: int = 0,
        outpaint_up: int = 0,
        outpaint_down: int = 0,
        outpaint_fill: str = "Blurred edge",
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ):
        """Repaint the masked area (white) of an image; everything outside the mask is kept. ``outpaint_*``: grow
        the picture by that many pixels per side and generate the new area (the mask may then be empty)."""
        picture, painted = split_editor_value(image, mask)
        req = build_request(InpaintRequest, locals(), image=picture, mask=painted)
        yield from stream_generation(studio, req, request, progress, mask_shown, tab="inpaint")

    def mask_shown(result):
        """The mask as it was used, tinted over the first picture (its pixels elsewhere unchanged)."""
        if result is None or result.extras.get("mask") is None:
            return (None,)
        return (mask_overlay(result.images[0], result.extras["mask"]),)

    wire_generation(
        studio,
        controls,
        out,
        inpaint,
        [editor, mask, strength, mask_blur, inpaint_area, padding, resize_mode, *outpaint.inputs()],
        api_name="inpaint",
        extra_outputs=[mask_used],
        preset_fields={"strength": strength, "mask_blur": mask_blur},
    )
    return TabHandle("inpaint", controls, out, editor, {"strength": strength, "mask_blur": mask_blur})
