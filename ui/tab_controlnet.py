"""The ControlNet tab: a reference picture → a control map (canny, depth, pose) that steers the picture.

Two units (the second one optional) are built by one builder; the control map each unit used is shown
next to its input, before generating (Preview map) and with the result. The first unit's control type "inpaint"
(preprocessor ``inpaint_only``) repaints the area masked under "Inpaint mask" (the inpaint tab's editor and mask
upload) with the inpaint ControlNet: the inpaint tab's ControlNet inpaint strategy, run from here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gradio as gr
from PIL import Image

from backend.images.ops import mask_overlay
from backend.schema.choices import CONTROL_TYPES, PREPROCESSORS
from backend.schema.errors import ValidationError
from backend.schema.fields import field_default
from backend.schema.inpaint_control import CONTROLNET_INPAINT, INPAINT_CONTROL_TYPE, INPAINT_MODULE
from backend.schema.requests import ControlNetRequest, ControlUnit, InpaintRequest, field_limits

from .common import CommonControls, build_common_controls
from .controls import limit_slider, words
from .editor import split_editor_value
from .events import refuse
from .generation import stream_generation
from .handle import TabHandle
from .handlers import build_request, field_function, tab_handler
from .inputs import FieldDropdown, FieldRadio, PictureInput, picture_input
from .ip_adapter import build_ip_adapter
from .output import build_output_block
from .prompt import build_prompt_section
from .send import sent_fields
from .studio import Studio
from .tab_img2img import build_resize_mode, build_strength
from .tab_inpaint import build_pictures
from .wiring import wire_generation

# ControlUnit's fields in the order each unit's controls are inputs (and the API takes them).
UNIT_FIELDS = tuple(f.name for f in fields(ControlUnit))
OFF = "off"  # the second unit's control type when it is not used
SECOND = "_2"  # the second unit's parameters are the first's names with this suffix
PREPROCESSOR_LABELS = {
    "auto": "run the control type's preprocessor",
    "none": "none — my image already is a control map",
    INPAINT_MODULE: "inpaint_only — repaint the masked area, keep the rest (control type inpaint)",
}
# The inpaint tab's editor and mask upload, by this tab's parameter names (``image`` is the first unit's picture).
MASK_PARAMETERS = {"image": "inpaint_picture", "mask": "mask"}
Component = gr.components.Component


@dataclass
class UnitControls:
    fields: dict[str, Component]  # ControlUnit's field → its control, in UNIT_FIELDS order
    preview: gr.Button
    control_map: gr.Image

    def named(self, suffix: str = "") -> dict[str, Component]:
        """The controls by handler parameter name (the second unit's end in ``_2``)."""
        return {name + suffix: control for name, control in self.fields.items()}


def build_unit(studio: Studio, prefix: str, optional: bool) -> UnitControls:
    """One ControlNet unit's controls; ``optional`` units start "off" and may leave their picture empty."""
    label = "Reference picture" + (" (empty = the first unit's)" if optional else "")
    with gr.Row():
        image = picture_input(
            PictureInput,
            label=label,
            max_pixels=studio.engine.settings.max_image_pixels,
            type="pil",
            image_mode="RGB",
            format="png",
            elem_id=f"{prefix}-image",
        )
        control_map = gr.Image(
            label="Control map", type="pil", format="png", interactive=False, elem_id=f"{prefix}-map"
        )
    # Only the first unit inpaints: the ControlNet inpaint strategy runs alone.
    inpaint = () if optional else (INPAINT_CONTROL_TYPE,)
    with gr.Row():
        choices = ([OFF] if optional else []) + list(CONTROL_TYPES) + list(inpaint)
        control_type = FieldDropdown(choices, value=choices[0], label="Control type", elem_id=f"{prefix}-control-type")
        preview = gr.Button("Preview map", size="sm", scale=0, min_width=120, elem_id=f"{prefix}-preview")
    preprocessor = FieldRadio(
        [(PREPROCESSOR_LABELS[p], p) for p in (*PREPROCESSORS, *(INPAINT_MODULE for _ in inpaint))],
        value=field_default(ControlUnit, "preprocessor"),
        label="Preprocessor",
        elem_id=f"{prefix}-preprocessor",
    )
    found = {"image": image, "control_type": control_type, "preprocessor": preprocessor}
    found |= _build_unit_options(studio, prefix, control_type, canny=choices[0] == "canny")
    return UnitControls({name: found[name] for name in UNIT_FIELDS}, preview, control_map)


def _build_unit_options(studio: Studio, prefix: str, control_type: gr.Dropdown, canny: bool) -> dict[str, Component]:
    """The detector's options (each shown only for its control type), weight and guidance range. ControlUnit has
    no labels in the schema: they are the UI's (A1111's words)."""
    limits = field_limits(studio.engine.settings)

    def slider(name: str, label: str, **kwargs: Any) -> gr.Slider:
        return limit_slider(label, limits[name], field_default(ControlUnit, name), f"{prefix}-{name}", **kwargs)

    def checkbox(name: str, label: str) -> gr.Checkbox:
        return gr.Checkbox(
            value=field_default(ControlUnit, name), label=label, elem_id=f"{prefix}-{name.replace('_', '-')}"
        )

    with gr.Row():
        low = slider("low_threshold", "Canny low threshold", visible=canny)
        high = slider("high_threshold", "Canny high threshold", visible=canny)
    with gr.Row(visible=False) as pose_row:
        pose = {name: checkbox(name, name[5:].capitalize()) for name in ("pose_body", "pose_hands", "pose_face")}
    found = {"low_threshold": low, "high_threshold": high, **pose}
    found["detect_resolution"] = slider("detect_resolution", "Detect resolution (0 = the output size)")
    found["conditioning_scale"] = slider("conditioning_scale", "Control weight (conditioning scale)")
    with gr.Row():
        found["guidance_start"] = slider(
            "guidance_start", "Guidance start", info="Fraction of the steps after which the ControlNet starts to steer."
        )
        found["guidance_end"] = slider(
            "guidance_end",
            "Guidance end",
            info="Fraction of the steps after which it stops; earlier leaves the details to the prompt.",
        )

    def show_options(control_type: str):
        # Each detector's own options, shown only where they apply.
        return (
            gr.Slider(visible=control_type == "canny"),
            gr.Slider(visible=control_type == "canny"),
            gr.Row(visible=control_type == "pose"),
        )

    control_type.change(show_options, control_type, [low, high, pose_row], queue=False, api_visibility="private")
    return found


def wire_inpaint_choice(unit: UnitControls) -> None:
    """Control type inpaint and preprocessor inpaint_only go together: choosing one sets the other."""
    control_type, preprocessor = unit.fields["control_type"], unit.fields["preprocessor"]

    def matched(chosen: str, current: str) -> Any:
        if chosen == INPAINT_CONTROL_TYPE:
            return INPAINT_MODULE
        return field_default(ControlUnit, "preprocessor") if current == INPAINT_MODULE else gr.skip()

    control_type.input(matched, [control_type, preprocessor], preprocessor, queue=False, api_visibility="private")


# The first unit's sliders the ControlNet inpaint strategy does not take (it runs the unit at their defaults).
STRATEGY_FIXED = {"conditioning_scale": "Control weight", "guidance_start": "Guidance start",
                  "guidance_end": "Guidance end"}


def inpaint_request(values: dict[str, Any]) -> InpaintRequest:
    """The first unit's control type inpaint: the inpaint request of the ControlNet inpaint strategy. The picture is
    the one in the mask editor, else the unit's; the mask is the painted strokes, or the uploaded mask."""
    if (values["control_type"] == INPAINT_CONTROL_TYPE) != (values["preprocessor"] == INPAINT_MODULE):
        raise refuse(f"Preprocessor: {INPAINT_MODULE} goes with control type {INPAINT_CONTROL_TYPE} (and only with it)")
    if values["control_type_2"] != OFF:
        raise refuse(f"Second unit: ControlNet inpaint runs alone; set the second unit's control type to {OFF}")
    if values["init_image"] is not None:
        raise refuse("Init picture: control type inpaint repaints the picture in the Inpaint mask editor from noise; "
                     "remove the init picture (for a denoising strength, use the inpaint tab's ControlNet strategy)")
    for name, label in STRATEGY_FIXED.items():  # the inpaint strategy runs the unit as the extension's default
        if values[name] != field_default(ControlUnit, name):
            raise refuse(f"{label}: control type inpaint runs the unit at {field_default(ControlUnit, name):g}; "
                         "set it back")
    picture, mask = split_editor_value(values["inpaint_picture"], values["mask"])
    picture = picture if picture is not None else values["image"]
    if picture is None:
        raise refuse("Reference picture: upload the picture to repaint (or put it in the Inpaint mask editor)")
    if mask is None:
        raise refuse("Mask: control type inpaint needs a mask: paint the area to repaint in the Inpaint mask "
                     "editor, or upload a mask there (white = repaint)")
    # From noise, as the extension's inpaint_only in txt2img.
    return build_request(InpaintRequest, values, image=picture, mask=mask, strength=1.0,
                         inpaint_strategy=CONTROLNET_INPAINT)


def shown_maps(result: Any) -> tuple[Image.Image | None, Image.Image | None]:
    """Each unit's control map; for ControlNet inpaint, the mask used tinted over the first picture."""
    if result is not None and result.extras.get("mask") is not None:
        return mask_overlay(result.images[0], result.extras["mask"]), None
    found = result.extras.get("control_maps", []) if result else []
    return (found[0] if found else None, found[1] if len(found) > 1 else None)


def unit_from(values: dict[str, Any], suffix: str = "") -> ControlUnit:
    """A unit from a handler's arguments (the second unit's names end in ``_2``)."""
    return ControlUnit(**{name: values[name + suffix] for name in UNIT_FIELDS})


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            section = build_prompt_section(studio, "controlnet")
            first = build_unit(studio, "controlnet", optional=False)
            guess_mode = gr.Checkbox(
                value=field_default(ControlNetRequest, "guess_mode"),
                info="The ControlNet ignores the prompt and reads the content from the map alone.",
                elem_id="controlnet-guess-mode",
                **words("guess_mode", ControlNetRequest),
            )
            with gr.Accordion("Second unit (multi-ControlNet, e.g. pose + depth)", open=False):
                second = build_unit(studio, "controlnet-2", optional=True)
            with gr.Accordion("Start from a picture (img2img)", open=False):
                init_image = picture_input(
                    PictureInput,
                    label="Init picture (empty = start from noise)",
                    max_pixels=studio.engine.settings.max_image_pixels,
                    type="pil",
                    image_mode="RGB",
                    format="png",
                    elem_id="controlnet-init-image",
                )
                strength = build_strength(studio, "controlnet", ControlNetRequest)
            with gr.Accordion("Inpaint mask (control type inpaint)", open=False, elem_id="controlnet-inpaint-box"):
                painted = build_pictures(studio, "controlnet-inpaint")
            resize_mode = build_resize_mode("controlnet", ControlNetRequest)
            # The model's own size by default (a large photo as reference must not make a huge picture);
            # 0 still means the picture's size.
            controls = build_common_controls(studio, "controlnet", zero_size_allowed=True, prompt_section=section)
            ip = build_ip_adapter(studio, "controlnet", field_limits(studio.engine.settings))
        with gr.Column(scale=1):
            out = build_output_block("controlnet")

    def controlnet(values, request, progress):
        """Generate steered by a control map made from ``image`` (canny, depth or pose), from noise or from
        ``init_image``; a second unit (``*_2``, ``control_type_2="off"`` = unused) steers together with it.
        Control type ``inpaint`` (preprocessor ``inpaint_only``) repaints the area ``mask`` (or the strokes painted
        on ``inpaint_picture``) marks white. Returns the images, parameters, seed and each unit's control map."""
        if values["control_type"] == INPAINT_CONTROL_TYPE or values["preprocessor"] == INPAINT_MODULE:
            req = inpaint_request(values)
        else:
            units = [unit_from(values)] + ([unit_from(values, SECOND)] if values["control_type_2"] != OFF else [])
            req = build_request(ControlNetRequest, values, units=tuple(units))
        yield from stream_generation(studio, req, request, progress, shown_maps, tab="controlnet")

    # The first unit and guess mode are required; the init picture, its strength, the resize mode and the second
    # unit are optional for API clients (defaults of None make the pictures optional).
    extra = {"init_image": init_image, "strength": strength, "resize_mode": resize_mode}
    masks = {MASK_PARAMETERS[name]: control for name, control in painted.items()}
    own = first.named() | {"guess_mode": guess_mode} | extra | second.named(SECOND) | masks | ip
    second_defaults = {name + SECOND: field_default(ControlUnit, name) for name in UNIT_FIELDS}
    handler = tab_handler(
        controlnet,
        (ControlNetRequest, ControlUnit),
        controls.fields,
        required=(*UNIT_FIELDS, "guess_mode"),
        optional=(*extra, *second.named(SECOND), *masks, *ip),
        defaults=second_defaults | {"control_type" + SECOND: OFF} | dict.fromkeys(masks),
    )
    wire_inpaint_choice(first)
    wire_control_maps(studio, first, second, controls, resize_mode)
    wire_generation(
        studio,
        controls,
        out,
        handler,
        own,
        api_name="controlnet",
        extra_outputs=[first.control_map, second.control_map],
    )
    return TabHandle("controlnet", controls, out, first.fields["image"], sent_fields(ControlNetRequest, own))


def wire_control_maps(
    studio: Studio, first: UnitControls, second: UnitControls, controls: CommonControls, resize_mode: gr.Radio
) -> None:
    """Each unit's "Preview map": its control map at the output size, before generating (the first unit's is the
    public ``controlnet_map`` endpoint)."""
    size = {"width": controls["width"], "height": controls["height"], "resize_mode": resize_mode}

    def controlnet_map(values: dict[str, Any]) -> Image.Image:
        """Only the preprocessing: the control map of ``image`` at the output size (width/height 0 = the picture's)."""
        sized = {name: values[name] for name in size}
        if values["control_type"] == INPAINT_CONTROL_TYPE:
            raise refuse("Control type: inpaint has no map to preview (the ControlNet sees the picture with the "
                         "masked area blanked); Generate repaints it")
        try:
            (control_map,) = studio.engine.control_maps(ControlNetRequest(units=(unit_from(values),), **sized))
        except ValidationError as err:
            raise refuse(f"{err.field}: {err}") from None
        except (RuntimeError, ValueError) as err:  # a detector's weights missing, a picture it cannot read
            raise refuse(str(err)) from None
        return control_map

    preview = field_function(controlnet_map, (ControlUnit, ControlNetRequest), (*UNIT_FIELDS, *size))
    inputs = [*first.fields.values(), *size.values()]
    first.preview.click(preview, inputs, first.control_map, api_name="controlnet_map", concurrency_id="gpu")

    def second_map(fallback, image, control_type: str, *values: Any) -> Image.Image:
        if control_type == OFF:
            raise refuse("Pick a control type for the second unit first")
        return preview(image if image is not None else fallback, control_type, *values)

    second.preview.click(
        second_map,
        [first.fields["image"], *second.fields.values(), *size.values()],
        second.control_map,
        api_visibility="private",
        concurrency_id="gpu",
    )
