"""The controls every generating tab shares: one per common field of the schema (``common_fields()``).

Labels, tooltips, ranges and steps are the schema's (``ui.controls``). The fields listed in ``LAID_OUT`` have a
layout of their own here (rows, the model's default size and steps, the seed's buttons); every other common field
gets a control built from the schema alone, under the CFG scale, so a new common field needs no edit in the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from backend.families import family
from backend.families.base import OPTIONS
from backend.generation.engine import Engine
from backend.models import encoder_choice
from backend.schema.catalog import common_fields
from backend.schema.fields import Limit, field_default
from backend.schema.requests import GenerationRequest, field_limits
from backend.schema.samplers import SAMPLERS, supported_schedules

from .controls import field_control, field_slider, tool_button, words
from .detail import FIELDS as DETAIL_FIELDS
from .detail import build_detail
from .events import QUIET, TOASTING
from .inputs import FieldDropdown, FieldNumber
from .presets_ui import PresetRow
from .prompt import PromptSection, build_prompt_section
from .schedule import sampler_dropdowns, sampler_table, schedule_dropdown
from .studio import Studio

Component = gr.components.Component
# Request fields in the order every tab's handler takes them (and the API exposes them).
COMMON_FIELDS = common_fields()
# The common fields laid out by hand below; the others are built from the schema (``field_control``).
LAID_OUT = (
    *("prompt", "negative_prompt", "styles", "model", "vae", "text_encoders", "sampler", "schedule"),
    *("steps", "guidance_scale", "width", "height", "batch_size", "seed"),
    *("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"),
    *DETAIL_FIELDS,  # the ADetailer accordion (ui/detail.py)
)
# Shorter element ids than the field names (the page's error pointer in ui/app.py knows them).
ELEM_IDS = {"negative_prompt": "negative", "guidance_scale": "cfg", "batch_size": "batch"}


def control_id(prefix: str, name: str) -> str:
    return f"{prefix}-{ELEM_IDS.get(name, name.replace('_', '-'))}"


@dataclass
class CommonControls:
    components: dict[str, Component]  # every common field → its control (hidden ones too), in schema order
    random_seed: gr.Button
    reuse_seed: gr.Button
    presets: PresetRow | None = None
    fields: tuple[str, ...] = COMMON_FIELDS  # the fields this tab's handler takes (the others are hidden)
    size_from_image: bool = False  # width/height start at 0 = the input image's size

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    def inputs(self) -> list[Component]:
        return [self.components[name] for name in self.fields]


def build_common_controls(
    studio: Studio,
    prefix: str,
    size_from_image: bool = False,
    fields: Sequence[str] | None = None,
    zero_size_allowed: bool = False,
    prompt_section: PromptSection | None = None,
) -> CommonControls:
    """Prompt, negative prompt, model, sampler, steps, CFG, the other common fields, size, batch and seed.

    ``prompt_section``: the tab built it already (above its pictures); otherwise it is built here, first.

    ``size_from_image``: width/height start at 0, meaning "the input image's size".
    ``zero_size_allowed``: 0 is a valid width/height ("the input image's size") though they start at the
    model's size.
    ``fields``: the common fields the tab's handler takes (default all); the others are built hidden (a tab that
    sets one its own way, e.g. the sampler grid's sampler axis) and are not inputs.
    """
    fields = COMMON_FIELDS if fields is None else tuple(fields)
    limits = field_limits(studio.engine.settings)
    section = prompt_section or build_prompt_section(studio, prefix)
    built = section.fields() | build_model_row(studio, prefix) | _build_sampling(studio, prefix, limits)
    built |= {
        name: field_control(name, limits, control_id(prefix, name)) for name in COMMON_FIELDS if name not in LAID_OUT
    }
    built |= _build_size(studio, prefix, limits, size_from_image, zero_size_allowed or size_from_image)
    with gr.Row(equal_height=True):
        built["seed"] = FieldNumber(
            value=field_default(GenerationRequest, "seed"),
            precision=0,
            scale=4,
            elem_id=control_id(prefix, "seed"),
            **words("seed"),
        )
        random_seed = tool_button("Random", f"{prefix}-random-seed")
        reuse_seed = tool_button("Reuse", f"{prefix}-reuse-seed")
    built |= _build_seed_extra(prefix, limits)
    built |= build_detail(studio, prefix, limits)
    ordered = {name: built[name] for name in COMMON_FIELDS}
    controls = CommonControls(ordered, random_seed, reuse_seed, section.presets, fields, size_from_image)
    shown = family_options(studio.engine, studio.engine.default_model)
    for name in COMMON_FIELDS:
        if name not in fields or not shown.get(name, True):
            controls[name].visible = False
    _wire_control_updates(studio, controls, size_from_image)
    return controls


def _build_seed_extra(prefix: str, limits: dict[str, Limit]) -> dict[str, Component]:
    """A1111's "Extra" seed row, folded under the seed: the variation seed and its strength, and seed resize (0 =
    off)."""
    found: dict[str, Component] = {}
    with gr.Accordion("Extra", open=False, elem_id=f"{prefix}-seed-extra"):
        with gr.Row(equal_height=True):
            limit = limits["subseed"]
            found["subseed"] = FieldNumber(
                value=field_default(GenerationRequest, "subseed"),
                precision=0,
                minimum=limit.minimum,
                maximum=limit.maximum,
                step=limit.step,
                elem_id=control_id(prefix, "subseed"),
                **words("subseed"),
            )
            found["subseed_strength"] = field_slider(
                "subseed_strength", limits, control_id(prefix, "subseed_strength")
            )
        with gr.Row():
            for name in ("seed_resize_from_w", "seed_resize_from_h"):
                found[name] = field_slider(name, limits, control_id(prefix, name))
    return found


def family_options(engine: Engine, model: str) -> dict[str, bool]:
    """Common field → whether ``model``'s family honours it, for the optional fields families differ in (DeepCache,
    skip CFG, eta …): the page shows only those; what a family refuses or ignores would be a control doing nothing."""
    spec = engine.registry.models.get(model)
    honoured = family(spec.family).supports if spec else OPTIONS.keys()
    shown = {name: name in honoured for name in COMMON_FIELDS if name in OPTIONS}
    shown["text_encoders"] = spec is not None and encoder_choice.takes_choice(spec)  # files without their own
    return shown


def _build_sampling(studio: Studio, prefix: str, limits: dict[str, Limit]) -> dict[str, Component]:
    """Sampler and schedule, then steps and CFG scale at the startup model's defaults."""
    sampler = field_default(GenerationRequest, "sampler")
    with gr.Row():
        found = {
            "sampler": FieldDropdown(
                list(SAMPLERS), value=sampler, elem_id=control_id(prefix, "sampler"), **words("sampler")
            ),
            "schedule": FieldDropdown(
                supported_schedules(sampler),
                value=field_default(GenerationRequest, "schedule"),
                elem_id=control_id(prefix, "schedule"),
                **words("schedule"),
            ),
        }
    defaults = studio.engine.registry.get(studio.engine.default_model).defaults
    for name in ("steps", "guidance_scale"):
        found[name] = field_slider(name, limits, control_id(prefix, name), getattr(defaults, name))
    return found


def _build_size(
    studio: Studio, prefix: str, limits: dict[str, Limit], size_from_image: bool, zero_size_allowed: bool
) -> dict[str, Component]:
    """Width and height in a row (at 0 = the input image's size, or the startup model's), then the batch size."""
    defaults = studio.engine.registry.get(studio.engine.default_model).defaults
    found = {}
    with gr.Row():
        for name in ("width", "height"):
            limit = replace(limits[name], minimum=0) if zero_size_allowed else limits[name]
            label = words(name)["label"] + (" (0 = from image)" if zero_size_allowed else "")
            value = 0 if size_from_image else getattr(defaults, name)
            found[name] = field_slider(name, {name: limit}, control_id(prefix, name), value, label=label)
    found["batch_size"] = field_slider("batch_size", limits, control_id(prefix, "batch_size"))
    return found


def build_model_row(studio: Studio, prefix: str) -> dict[str, Component]:
    """The model and VAE dropdowns and the Refresh button, which rescans the checkpoint and VAE folders."""
    engine = studio.engine
    with gr.Row(equal_height=True):
        # Custom values pass to the engine, which checks the name against the current scan: an API client can use a
        # checkpoint found by Refresh though its copy of the dropdown's choices is the one from the start.
        model = FieldDropdown(
            model_choices(engine),
            value=engine.default_model,
            scale=8,
            allow_custom_value=True,
            elem_id=control_id(prefix, "model"),
            **words("model"),
        )
        # "" = the model's own VAE; custom values reach the engine, which names the VAEs it has.
        vae = FieldDropdown(
            vae_choices(engine),
            value=field_default(GenerationRequest, "vae"),
            scale=3,
            allow_custom_value=True,
            elem_id=control_id(prefix, "vae"),
            **words("vae"),
        )
        refresh = tool_button("Refresh", f"{prefix}-refresh-models")
    # The text-encoder files of the folders; none chosen = the automatic pairing. Shown for DiT files only.
    encoders = TextEncoderDropdown(
        text_encoder_choices(engine),
        value=encoder_choice.names(field_default(GenerationRequest, "text_encoders")),  # [] = automatic pairing
        multiselect=True,
        allow_custom_value=True,
        elem_id=control_id(prefix, "text_encoders"),
        **words("text_encoders"),
    )

    def refresh_models(current: str, current_vae: str):
        problems = engine.refresh_models()
        names = engine.registry.names
        for problem in problems:
            gr.Warning(problem)
        return (
            gr.Dropdown(choices=model_choices(engine), value=current if current in names else engine.default_model),
            gr.Dropdown(choices=vae_choices(engine), value=current_vae if current_vae in engine.registry.vaes else ""),
            gr.Dropdown(choices=text_encoder_choices(engine)),
        )

    # One public endpoint (txt2img's) is enough for API clients; the other tabs' buttons stay private.
    api = {"api_name": "refresh_models"} if prefix == "txt2img" else {"api_visibility": "private"}
    refresh.click(refresh_models, inputs=[model, vae], outputs=[model, vae, encoders], queue=False, **api)
    return {"model": model, "vae": vae, "text_encoders": encoders}


def model_choices(engine: Engine) -> list[tuple[str, str]]:
    """(label, name) per model: a hub model this server cannot download now is marked, its value stays the name."""
    return [
        (f"{name} — needs download" if engine.needs_download(name) else name, name) for name in engine.registry.names
    ]


def needs_download_message(name: str) -> str:
    return (
        f"{name} needs a download from the Hugging Face hub, which this server cannot reach (or was started "
        "offline). Choose another model; the server's owner can restart it with network access to download it."
    )


def vae_choices(engine: Engine) -> list[tuple[str, str]]:
    return [("Model's own", ""), *((name, name) for name in engine.registry.vaes)]


def text_encoder_choices(engine: Engine) -> list[str]:
    return [part.path.name for part in encoder_choice.candidates(engine.settings)]


class TextEncoderDropdown(FieldDropdown):
    """A multiselect whose value is the field's comma-separated file names (what the request and infotext hold)."""

    def preprocess(self, payload: Any) -> str:
        if isinstance(payload, str):  # an API client's "a.safetensors, b.safetensors"
            payload = encoder_choice.names(payload)
        return ", ".join(super().preprocess(payload) or [])

    def postprocess(self, value: Any) -> Any:
        return super().postprocess(encoder_choice.names(value) if isinstance(value, str) else value)


def _wire_control_updates(studio: Studio, c: CommonControls, size_from_image: bool) -> None:
    """Quick UI-only events: no queue, not part of the public API."""
    c.random_seed.click(lambda: -1, outputs=c["seed"], **QUIET)

    # .input (the user's own choice), not .change: a preset or PNG info sets both together (ui/schedule.py), and a
    # second event racing theirs would read the old schedule and overwrite theirs.
    def schedules(sampler: str, schedule: str, model: str) -> gr.Dropdown:
        return schedule_dropdown(sampler, schedule, sampler_table(studio.engine, model))

    c["sampler"].input(schedules, inputs=[c["sampler"], c["schedule"], c["model"]], outputs=c["schedule"], **QUIET)

    options = list(family_options(studio.engine, studio.engine.default_model))

    def model_defaults(name: str, sampler: str, schedule: str):
        if studio.engine.needs_download(name):
            # Said at once, and the size and steps stay as they are: the model cannot run here.
            gr.Warning(needs_download_message(name))
            return (gr.skip(),) * (6 + len(options))
        d = studio.engine.registry.get(name).defaults
        # The family's samplers (FLUX and SD 3.x run flow-matching ones), the current pair kept where it has it, and
        # only the options it honours (a hidden one goes back to its default, which every family runs).
        menus = sampler_dropdowns(sampler_table(studio.engine, name), sampler, schedule)
        shown = family_options(studio.engine, name)
        visible = [
            gr.update(visible=True) if shown[option] and option in c.fields
            else gr.update(visible=False, value=field_default(GenerationRequest, option))
            for option in options
        ]
        if size_from_image:
            return gr.skip(), gr.skip(), d.steps, d.guidance_scale, *menus, *visible
        return d.width, d.height, d.steps, d.guidance_scale, *menus, *visible

    # .input, not .change: a preset that sets the model must not have its own values overwritten.
    names = ("width", "height", "steps", "guidance_scale", "sampler", "schedule", *options)
    outputs = [c[name] for name in names]
    inputs = [c["model"], c["sampler"], c["schedule"]]
    c["model"].input(model_defaults, inputs=inputs, outputs=outputs, **TOASTING)
