"""Shared control builders and the one generation handler every tab uses.

Slider ranges come from ``backend.requests.field_limits`` (the validator's own limits), so the UI can
never offer a value the backend rejects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from backend.engine import Cancelled, Engine, StepEvent
from backend.pipelines import ModelUnavailable
from backend.requests import GenerationRequest, GenerationResult, ValidationError, field_limits
from backend.samplers import SAMPLERS, supported_schedules

from .inputs import FieldDropdown, FieldNumber, FieldSlider
from .presets_ui import PresetRow, build_preset_row, wire_preset_row
from .schedule import schedule_dropdown
from .session import CancelRegistry
from .streaming import run_streaming

# Request fields in the order every tab's handler takes them (and the API exposes them).
COMMON_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "batch_size",
    "sampler",
    "schedule",
    "model",
    "styles",
    "vae",
)


@dataclass
class Studio:
    """What every tab needs from the app: the engine and the per-session stop registry."""

    engine: Engine
    cancels: CancelRegistry


@dataclass
class CommonControls:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    seed: gr.Number
    steps: gr.Slider
    guidance_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_size: gr.Slider
    sampler: gr.Dropdown
    schedule: gr.Dropdown
    model: gr.Dropdown
    styles: gr.Dropdown
    vae: gr.Dropdown
    random_seed: gr.Button
    reuse_seed: gr.Button
    presets: PresetRow | None = None
    fields: tuple[str, ...] = COMMON_FIELDS  # the fields this tab's handler takes (the others are hidden)
    size_from_image: bool = False  # width/height start at 0 = the input image's size

    def inputs(self) -> list[gr.components.Component]:
        return [getattr(self, name) for name in self.fields]


@dataclass
class OutputControls:
    generate: gr.Button
    stop: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    seed_used: gr.Number
    selected: gr.State  # index of the gallery image the user clicked (0 until then)
    send_buttons: dict[str, gr.Button]  # target tab id → "Send to …" button

    def outputs(self) -> list[gr.components.Component]:
        return [self.gallery, self.infotext, self.seed_used]


def build_prompt_block(studio: Studio, prefix: str) -> tuple[gr.Textbox, gr.Textbox, gr.Dropdown]:
    """Prompt, negative prompt, styles, and the final prompts the styles give (shown before generating)."""
    # value="": the API then has a default for them too, so a client may send only the fields it cares about.
    prompt = gr.Textbox("", label="Prompt", lines=3, placeholder="a lighthouse at dusk", elem_id=f"{prefix}-prompt")
    prompt_tokens = gr.Markdown("0/75", elem_id=f"{prefix}-prompt-tokens")
    negative = gr.Textbox(
        "", label="Negative prompt", lines=2, placeholder="blurry, lowres", elem_id=f"{prefix}-negative"
    )
    negative_tokens = gr.Markdown("0/75", elem_id=f"{prefix}-negative-tokens")
    for box, counter in ((prompt, prompt_tokens), (negative, negative_tokens)):
        # Tokens per 75-token chunk, as A1111 shows them; weights and brackets do not count.
        box.change(studio.engine.token_label, box, counter, queue=False, api_visibility="private")
    styles = FieldDropdown(
        list(studio.engine.presets.styles), value=[], multiselect=True, label="Styles", elem_id=f"{prefix}-styles"
    )
    final = gr.Textbox(
        label="Prompt that will run", lines=2, interactive=False, visible=False, elem_id=f"{prefix}-final-prompt"
    )

    def preview(text: str, neg: str, chosen: list[str]):
        if not chosen:
            return gr.Textbox(value="", visible=False)
        try:
            merged = studio.engine.apply_styles(GenerationRequest(prompt=text, negative_prompt=neg, styles=chosen))
        except ValidationError as err:
            return gr.Textbox(value=str(err), visible=True)
        shown = merged.prompt + (f"\nNegative prompt: {merged.negative_prompt}" if merged.negative_prompt else "")
        return gr.Textbox(value=shown, visible=True)

    gr.on(
        [prompt.change, negative.change, styles.change],
        preview,
        [prompt, negative, styles],
        final,
        queue=False,
        api_visibility="private",
    )
    return prompt, negative, styles


def build_common_controls(
    studio: Studio,
    prefix: str,
    size_from_image: bool = False,
    fields: Sequence[str] = COMMON_FIELDS,
    zero_size_allowed: bool = False,
) -> CommonControls:
    """Prompt, negative prompt, sampler, steps, CFG, size, batch, seed and model, with their limits.

    ``size_from_image``: width/height start at 0, meaning "the input image's size".
    ``zero_size_allowed``: 0 is a valid width/height ("the input image's size") though they start at the
    model's size.
    ``fields``: the common fields the tab's handler takes; the others are built hidden (a tab that sets one its
    own way, e.g. the sampler grid's sampler axis) and are not inputs.
    """
    engine = studio.engine
    limits = field_limits(engine.settings)
    spec = engine.registry.get(engine.default_model)
    zero_size_allowed = zero_size_allowed or size_from_image
    size_note = " (0 = from image)" if zero_size_allowed else ""
    presets = build_preset_row(engine.presets, prefix)
    prompt, negative, styles = build_prompt_block(studio, prefix)
    model, vae = build_model_row(studio, prefix)
    with gr.Row():
        sampler = FieldDropdown(list(SAMPLERS), value="DPM++ 2M", label="Sampler", elem_id=f"{prefix}-sampler")
        schedule = FieldDropdown(
            supported_schedules("DPM++ 2M"), value="Karras", label="Schedule type", elem_id=f"{prefix}-schedule"
        )
    steps = limit_slider("Steps", limits["steps"], spec.defaults.steps, f"{prefix}-steps")
    guidance = limit_slider("CFG scale", limits["guidance_scale"], spec.defaults.guidance_scale, f"{prefix}-cfg")
    with gr.Row():
        w_limit, h_limit = limits["width"], limits["height"]
        if zero_size_allowed:
            w_limit, h_limit = (replace(lim, minimum=0) for lim in (w_limit, h_limit))
        width = limit_slider(
            "Width" + size_note, w_limit, 0 if size_from_image else spec.defaults.width, f"{prefix}-width"
        )
        height = limit_slider(
            "Height" + size_note, h_limit, 0 if size_from_image else spec.defaults.height, f"{prefix}-height"
        )
    batch = limit_slider("Batch size", limits["batch_size"], 1, f"{prefix}-batch")
    with gr.Row(equal_height=True):
        seed = FieldNumber(label="Seed (-1 = random)", value=-1, precision=0, scale=4, elem_id=f"{prefix}-seed")
        random_seed = gr.Button("Random", scale=0, min_width=80, elem_id=f"{prefix}-random-seed")
        reuse_seed = gr.Button("Reuse", scale=0, min_width=80, elem_id=f"{prefix}-reuse-seed")
    controls = CommonControls(
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        batch_size=batch,
        sampler=sampler,
        schedule=schedule,
        model=model,
        styles=styles,
        vae=vae,
        random_seed=random_seed,
        reuse_seed=reuse_seed,
        presets=presets,
        fields=tuple(fields),
        size_from_image=size_from_image,
    )
    for name in COMMON_FIELDS:
        if name not in fields:
            getattr(controls, name).visible = False
    _wire_control_updates(studio, controls, size_from_image)
    return controls


def build_model_row(studio: Studio, prefix: str) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The model and VAE dropdowns and the Refresh button, which rescans the checkpoint and VAE folders."""
    engine = studio.engine
    with gr.Row(equal_height=True):
        # Custom values pass to the engine, which checks the name against the current scan: an API client can use a
        # checkpoint found by Refresh though its copy of the dropdown's choices is the one from the start.
        model = FieldDropdown(
            engine.registry.names,
            value=engine.default_model,
            label="Model",
            scale=8,
            allow_custom_value=True,
            elem_id=f"{prefix}-model",
        )
        # "" = the model's own VAE; custom values reach the engine, which names the VAEs it has.
        vae = FieldDropdown(
            vae_choices(engine), value="", label="VAE", scale=3, allow_custom_value=True, elem_id=f"{prefix}-vae"
        )
        refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id=f"{prefix}-refresh-models")

    def refresh_models(current: str, current_vae: str):
        problems = engine.refresh_models()
        names = engine.registry.names
        for problem in problems:
            gr.Warning(problem)
        return (
            gr.Dropdown(choices=names, value=current if current in names else engine.default_model),
            gr.Dropdown(choices=vae_choices(engine), value=current_vae if current_vae in engine.registry.vaes else ""),
        )

    # One public endpoint (txt2img's) is enough for API clients; the other tabs' buttons stay private.
    api = {"api_name": "refresh_models"} if prefix == "txt2img" else {"api_visibility": "private"}
    refresh.click(refresh_models, inputs=[model, vae], outputs=[model, vae], queue=False, **api)
    return model, vae


def vae_choices(engine: Engine) -> list[tuple[str, str]]:
    return [("Model's own", ""), *((name, name) for name in engine.registry.vaes)]


def limit_slider(label: str, limit: Any, value: float, elem_id: str, **kwargs: Any) -> gr.Slider:
    """A slider over a validator limit (``field_limits``): its range and (unless given) step are the backend's."""
    options = {"step": limit.step, **kwargs}
    return FieldSlider(limit.minimum, limit.maximum, value=value, label=label, elem_id=elem_id, **options)


def _wire_control_updates(studio: Studio, c: CommonControls, size_from_image: bool) -> None:
    """Quick UI-only events: no queue, not part of the public API."""
    quiet = {"queue": False, "api_visibility": "private"}
    c.random_seed.click(lambda: -1, outputs=c.seed, **quiet)

    # .input (the user's own choice), not .change: a preset or PNG info sets both together (ui/schedule.py), and a
    # second event racing theirs would read the old schedule and overwrite theirs.
    c.sampler.input(schedule_dropdown, inputs=[c.sampler, c.schedule], outputs=c.schedule, **quiet)

    def model_defaults(name: str):
        d = studio.engine.registry.get(name).defaults
        if size_from_image:
            return gr.skip(), gr.skip(), d.steps, d.guidance_scale
        return d.width, d.height, d.steps, d.guidance_scale

    # .input, not .change: a preset that sets the model must not have its own values overwritten.
    c.model.input(model_defaults, inputs=c.model, outputs=[c.width, c.height, c.steps, c.guidance_scale], **quiet)


@dataclass
class TabHandle:
    """What the app needs of a built tab to wire "Send to …" between tabs."""

    tab_id: str
    controls: CommonControls
    out: OutputControls
    image_input: gr.components.Component | None = None  # where a sent image lands
    fields: dict[str, gr.components.Component] = field(default_factory=dict)  # tab-only request fields


SEND_TARGETS = {"img2img": "Send to img2img", "inpaint": "Send to inpaint", "controlnet": "Send to ControlNet"}


def build_output_block(prefix: str) -> OutputControls:
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    # Not interactive: an output, so no "Drop Media Here" upload prompt while it is empty.
    gallery = gr.Gallery(
        label="Images", format="png", columns=2, height=480, interactive=False, elem_id=f"{prefix}-gallery"
    )
    with gr.Row():
        send = {
            target: gr.Button(label, size="sm", elem_id=f"{prefix}-send-{target}")
            for target, label in SEND_TARGETS.items()
        }
    seed_used = gr.Number(label="Seed used", value=None, precision=0, interactive=False, elem_id=f"{prefix}-seed-used")
    infotext = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id=f"{prefix}-infotext")
    selected = gr.State(0)
    gallery.select(_selected_index, None, selected, queue=False, api_visibility="private")
    gallery.change(lambda: 0, None, selected, queue=False, api_visibility="private")
    return OutputControls(generate, stop, gallery, infotext, seed_used, selected, send)


def build_request(cls: type[GenerationRequest], values: dict[str, Any], **overrides: Any) -> GenerationRequest:
    """A tab handler's arguments (its ``locals()``) → the request: every field the request class has."""
    names = {f.name for f in dataclasses.fields(cls)}
    chosen = {name: value for name, value in values.items() if name in names}
    chosen.update(overrides)
    chosen["styles"] = tuple(chosen.get("styles") or ())
    return cls(**chosen)


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index


def stream_generation(
    studio: Studio,
    request: GenerationRequest,
    session: str,
    progress: gr.Progress,
    extras: Callable[[GenerationResult | None], tuple[Any, ...]] = lambda result: (),
    runner: Any = None,
    final: Callable[[Any], tuple[Any, ...]] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The body of every tab's handler: (gallery, infotext, seed used, *extras) while running and at the end.

    ``extras`` maps the final result (None while running) to the tab's additional outputs. ``runner`` (default the
    engine) is anything with ``Engine.run``'s signature, e.g. the sampler grid's; ``final`` maps its result to
    (gallery, infotext, seed used).
    """
    cancel = studio.cancels.start(session)
    try:
        for item in run_streaming(runner or studio.engine, request, cancel):
            if isinstance(item, StepEvent):
                desc = getattr(item, "desc", None) or f"Step {item.step}/{item.total}"  # a grid names its cell
                progress((item.step, item.total), desc=desc)
                if item.preview is not None:
                    yield [item.preview], desc, gr.skip(), *_skips(extras)
            else:
                for warning in getattr(item, "warnings", ()):
                    gr.Warning(warning)
                yield *(final or _final)(item), *extras(item)
    except ValidationError as err:
        raise gr.Error(f"{err.field}: {err}") from None
    except (ModelUnavailable, ValueError) as err:  # ValueError: a pipeline refusing its arguments
        raise gr.Error(str(err)) from None
    except Cancelled:
        yield [], "Stopped. Nothing was saved.", gr.skip(), *_skips(extras)
    finally:
        studio.cancels.finish(session, cancel)


def _skips(extras: Callable[[GenerationResult | None], tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(gr.skip() for _ in extras(None))


def _final(result: GenerationResult) -> tuple[list[Any], str, int]:
    # Never the saved files: the output folder is the server owner's, not served to anyone. Each picture carries
    # its infotext in ``info``, which Gradio writes into the PNG it caches for this session, so downloads keep it.
    images = result.images
    took = f"{result.request.steps} steps · {result.seconds:.1f} s"
    captions = [f"seed {s} · {took}" for s in result.seeds]
    return list(zip(images, captions, strict=True)), result.infotext, result.seeds[0]


def wire_generation(
    studio: Studio,
    controls: CommonControls,
    out: OutputControls,
    handler: Callable[..., Any],
    extra_inputs: list[gr.components.Component],
    api_name: str,
    extra_outputs: list[gr.components.Component] | None = None,
    preset_fields: dict[str, gr.components.Component] | None = None,
) -> None:
    """Generate/Stop/reuse-seed/preset wiring shared by every tab; ``handler`` is the tab's API function.

    ``preset_fields``: the tab's own controls a preset may set beyond the common ones (e.g. strength).
    """
    if controls.presets is not None:
        targets = {name: getattr(controls, name) for name in COMMON_FIELDS} | (preset_fields or {})
        wire_preset_row(studio.engine.presets, controls.presets, targets)

    def enqueue(request: gr.Request) -> None:
        studio.cancels.enqueue(request.session_hash or "")

    # Registered at click time (no queue), so Stop also reaches a run still waiting in the queue.
    out.generate.click(enqueue, queue=False, api_visibility="private").then(
        handler,
        inputs=controls.inputs() + extra_inputs,
        outputs=out.outputs() + (extra_outputs or []),
        api_name=api_name,
        concurrency_id="gpu",
    )

    def stop(request: gr.Request) -> None:
        studio.cancels.cancel(request.session_hash or "")

    out.stop.click(stop, queue=False, api_visibility="private")
    controls.reuse_seed.click(
        lambda s: -1 if s is None else s, out.seed_used, controls.seed, queue=False, api_visibility="private"
    )
