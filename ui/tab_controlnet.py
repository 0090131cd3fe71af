"""The ControlNet tab: a reference picture → a control map (canny, depth, pose) that steers the picture.

Two units (the second one optional) are built by one builder; the control map each unit used is shown
next to its input, before generating (Preview map) and with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gradio as gr
from PIL import Image

from backend.annotators import CONTROL_TYPES, PREPROCESSORS
from backend.images import RESIZE_MODES
from backend.requests import ControlNetRequest, ControlUnit, ValidationError, field_limits

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
from .events import refuse
from .inputs import FieldDropdown, FieldRadio, PictureInput, picture_input
from .tab_img2img import build_strength

# ControlUnit's fields in the order each unit's controls are inputs (and the API takes them).
UNIT_FIELDS = tuple(f.name for f in fields(ControlUnit))
OFF = "off"  # the second unit's control type when it is not used
PREPROCESSOR_LABELS = {
    "auto": "run the control type's preprocessor",
    "none": "none — my image already is a control map",
}


@dataclass
class UnitControls:
    image: gr.Image
    control_type: gr.Dropdown
    preprocessor: gr.Radio
    conditioning_scale: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    low_threshold: gr.Slider
    high_threshold: gr.Slider
    detect_resolution: gr.Slider
    pose_body: gr.Checkbox
    pose_hands: gr.Checkbox
    pose_face: gr.Checkbox
    preview: gr.Button
    control_map: gr.Image

    def inputs(self) -> list[gr.components.Component]:
        return [getattr(self, name) for name in UNIT_FIELDS]


def build_unit(studio: Studio, prefix: str, optional: bool) -> UnitControls:
    """One ControlNet unit's controls; ``optional`` units start "off" and may leave their picture empty."""
    limits = field_limits(studio.engine.settings)
    defaults = ControlUnit()

    def slider(name: str, label: str, value: float, **kwargs: Any) -> gr.Slider:
        return limit_slider(label, limits[name], value, f"{prefix}-{name}", **kwargs)

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
    with gr.Row():
        choices = ([OFF] if optional else []) + list(CONTROL_TYPES)
        control_type = FieldDropdown(choices, value=choices[0], label="Control type", elem_id=f"{prefix}-control-type")
        preview = gr.Button("Preview map", size="sm", scale=0, min_width=120, elem_id=f"{prefix}-preview")
    preprocessor = FieldRadio(
        [(PREPROCESSOR_LABELS[p], p) for p in PREPROCESSORS],
        value="auto",
        label="Preprocessor",
        elem_id=f"{prefix}-preprocessor",
    )
    canny = choices[0] == "canny"
    with gr.Row():
        low = slider("low_threshold", "Canny low threshold", defaults.low_threshold, visible=canny)
        high = slider("high_threshold", "Canny high threshold", defaults.high_threshold, visible=canny)
    with gr.Row(visible=False) as pose_row:
        pose_body = gr.Checkbox(value=defaults.pose_body, label="Body", elem_id=f"{prefix}-pose-body")
        pose_hands = gr.Checkbox(value=defaults.pose_hands, label="Hands", elem_id=f"{prefix}-pose-hands")
        pose_face = gr.Checkbox(value=defaults.pose_face, label="Face", elem_id=f"{prefix}-pose-face")
    detect = slider("detect_resolution", "Detect resolution (0 = the output size)", defaults.detect_resolution)
    scale = slider("conditioning_scale", "Control weight (conditioning scale)", defaults.conditioning_scale)
    with gr.Row():
        start = slider(
            "guidance_start",
            "Guidance start",
            defaults.guidance_start,
            info="Fraction of the steps after which the ControlNet starts to steer.",
        )
        end = slider(
            "guidance_end",
            "Guidance end",
            defaults.guidance_end,
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
    return UnitControls(
        image=image,
        control_type=control_type,
        preprocessor=preprocessor,
        conditioning_scale=scale,
        guidance_start=start,
        guidance_end=end,
        low_threshold=low,
        high_threshold=high,
        detect_resolution=detect,
        pose_body=pose_body,
        pose_hands=pose_hands,
        pose_face=pose_face,
        preview=preview,
        control_map=control_map,
    )


def unit_from(values: dict[str, Any], suffix: str = "") -> ControlUnit:
    """A unit from a handler's arguments (the second unit's names end in ``_2``)."""
    return ControlUnit(**{name: values[name + suffix] for name in UNIT_FIELDS})


def build_tab(studio: Studio) -> TabHandle:
    with gr.Row():
        with gr.Column(scale=1):
            section = build_prompt_section(studio, "controlnet")
            first = build_unit(studio, "controlnet", optional=False)
            guess_mode = gr.Checkbox(
                value=False,
                label="Guess mode",
                info="The ControlNet ignores the prompt and reads the content from the map alone.",
                elem_id="controlnet-guess-mode",
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
                strength = build_strength(studio, "controlnet")
            resize_mode = FieldRadio(
                list(RESIZE_MODES), value="Crop and resize", label="Resize mode", elem_id="controlnet-resize-mode"
            )
            # The model's own size by default (a large photo as reference must not make a huge picture);
            # 0 still means the picture's size.
            controls = build_common_controls(studio, "controlnet", zero_size_allowed=True, prompt_section=section)
        with gr.Column(scale=1):
            out = build_output_block("controlnet")

    def controlnet(
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
        control_type: str,
        preprocessor: str,
        conditioning_scale: float,
        guidance_start: float,
        guidance_end: float,
        low_threshold: int,
        high_threshold: int,
        detect_resolution: int,
        pose_body: bool,
        pose_hands: bool,
        pose_face: bool,
        guess_mode: bool,
        init_image=None,  # defaults of None make these optional for API clients
        strength: float = 0.75,
        resize_mode: str = "Crop and resize",
        image_2=None,
        control_type_2: str = OFF,
        preprocessor_2: str = "auto",
        conditioning_scale_2: float = 1.0,
        guidance_start_2: float = 0.0,
        guidance_end_2: float = 1.0,
        low_threshold_2: int = 100,
        high_threshold_2: int = 200,
        detect_resolution_2: int = 0,
        pose_body_2: bool = True,
        pose_hands_2: bool = False,
        pose_face_2: bool = False,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ):
        """Generate steered by a control map made from ``image`` (canny, depth or pose), from noise or from
        ``init_image``; a second unit (``*_2``, ``control_type_2="off"`` = unused) steers together with it.
        Returns the images, parameters, seed and each unit's control map."""
        values = locals()
        units = [unit_from(values)] + ([unit_from(values, "_2")] if control_type_2 != OFF else [])
        req = build_request(ControlNetRequest, values, units=tuple(units))

        def maps(result) -> tuple[Image.Image | None, Image.Image | None]:
            found = result.extras.get("control_maps", []) if result else []
            return (found[0] if found else None, found[1] if len(found) > 1 else None)

        yield from stream_generation(studio, req, request, progress, maps, tab="controlnet")

    size_inputs = [controls.width, controls.height, resize_mode]

    def controlnet_map(
        image,
        control_type: str,
        preprocessor: str,
        conditioning_scale: float,
        guidance_start: float,
        guidance_end: float,
        low_threshold: int,
        high_threshold: int,
        detect_resolution: int,
        pose_body: bool,
        pose_hands: bool,
        pose_face: bool,
        width: int,
        height: int,
        resize_mode: str,
    ) -> Image.Image:
        """Only the preprocessing: the control map of ``image`` at the output size (width/height 0 = the picture's)."""
        unit = unit_from(locals())
        try:
            (control_map,) = studio.engine.control_maps(
                ControlNetRequest(units=(unit,), width=width, height=height, resize_mode=resize_mode)
            )
        except ValidationError as err:
            raise refuse(f"{err.field}: {err}") from None
        except (RuntimeError, ValueError) as err:  # a detector's weights missing, a picture it cannot read
            raise refuse(str(err)) from None
        return control_map

    first.preview.click(
        controlnet_map, first.inputs() + size_inputs, first.control_map, api_name="controlnet_map", concurrency_id="gpu"
    )

    def second_map(fallback, image, control_type: str, *values: Any) -> Image.Image:
        if control_type == OFF:
            raise refuse("Pick a control type for the second unit first")
        return controlnet_map(image if image is not None else fallback, control_type, *values)  # type: ignore[arg-type]

    second.preview.click(
        second_map,
        [first.image, *second.inputs(), *size_inputs],
        second.control_map,
        api_visibility="private",
        concurrency_id="gpu",
    )
    wire_generation(
        studio,
        controls,
        out,
        controlnet,
        [*first.inputs(), guess_mode, init_image, strength, resize_mode, *second.inputs()],
        api_name="controlnet",
        extra_outputs=[first.control_map, second.control_map],
        preset_fields={"strength": strength},
    )
    return TabHandle("controlnet", controls, out, first.image, {"strength": strength})
