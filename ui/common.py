"""Shared control builders and the one generation handler every tab uses.

Slider ranges come from ``backend.requests.field_limits`` (the validator's own limits), so the UI can
never offer a value the backend rejects.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from backend.engine import Cancelled, Engine, StepEvent
from backend.pipelines import ModelUnavailable
from backend.requests import GenerationRequest, GenerationResult, ValidationError, field_limits
from backend.samplers import SAMPLERS, supported_schedules

from .events import QUIET, TOASTING, refuse
from .inputs import FieldDropdown, FieldNumber, FieldSlider
from .networks import build_network_picker
from .presets_ui import PresetRow, build_preset_row, wire_preset_row
from .schedule import schedule_dropdown
from .session import CancelRegistry, owner_key
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
    "skip_cfg_after",
    "deep_cache",
)


@dataclass
class Studio:
    """What every tab needs from the app: the engine and the per-session stop registry."""

    engine: Engine
    cancels: CancelRegistry
    preset_storage: gr.BrowserState | None = None  # the page's own presets when nobody is logged in


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
    skip_cfg_after: gr.Slider
    deep_cache: gr.Slider
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
    """Prompt, negative prompt, the LoRA/embedding picker, styles, and the final prompts the styles give (shown
    before generating)."""
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
    build_network_picker(studio.engine, prefix, prompt)
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


@dataclass
class PromptSection:
    """Presets, prompt, negative prompt and styles: built first on every tab, so the prompt is what one sees first."""

    presets: PresetRow
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    styles: gr.Dropdown


def build_prompt_section(studio: Studio, prefix: str) -> PromptSection:
    presets = build_preset_row(studio.engine.presets, prefix)
    return PromptSection(presets, *build_prompt_block(studio, prefix))


def build_common_controls(
    studio: Studio,
    prefix: str,
    size_from_image: bool = False,
    fields: Sequence[str] = COMMON_FIELDS,
    zero_size_allowed: bool = False,
    prompt_section: PromptSection | None = None,
) -> CommonControls:
    """Prompt, negative prompt, sampler, steps, CFG, size, batch, seed and model, with their limits.

    ``prompt_section``: the tab built it already (above its pictures); otherwise it is built here, first.

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
    section = prompt_section or build_prompt_section(studio, prefix)
    presets, prompt, negative, styles = section.presets, section.prompt, section.negative_prompt, section.styles
    model, vae = build_model_row(studio, prefix)
    with gr.Row():
        sampler = FieldDropdown(list(SAMPLERS), value="DPM++ 2M", label="Sampler", elem_id=f"{prefix}-sampler")
        schedule = FieldDropdown(
            supported_schedules("DPM++ 2M"),
            value="Karras",
            label="Schedule type",
            info="How the noise level falls over the steps; Karras spends more steps on fine detail.",
            elem_id=f"{prefix}-schedule",
        )
    steps = limit_slider("Steps", limits["steps"], spec.defaults.steps, f"{prefix}-steps")
    guidance = limit_slider(
        "CFG scale",
        limits["guidance_scale"],
        spec.defaults.guidance_scale,
        f"{prefix}-cfg",
        info="How closely the picture follows the prompt: higher is more literal, too high burns the colours.",
    )
    # Opt-in speed: after this fraction of the steps the uncond pass is skipped (1 = CFG on every step).
    skip_cfg = limit_slider(
        "Skip CFG after (fraction of steps; 1 = never)",
        limits["skip_cfg_after"],
        1.0,
        f"{prefix}-skip-cfg-after",
        info="Below 1, the last steps run without the negative prompt's pass: faster, slightly different.",
    )
    deep_cache = limit_slider(
        "DeepCache interval (1 = off)",
        limits["deep_cache"],
        1,
        f"{prefix}-deep-cache",
        info="N > 1: the UNet's deep layers run every Nth step and are reused between: faster, slightly different.",
    )
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
        random_seed = gr.Button(
            "Random", size="sm", scale=0, min_width=80, elem_classes=["tool-button"], elem_id=f"{prefix}-random-seed"
        )
        reuse_seed = gr.Button(
            "Reuse", size="sm", scale=0, min_width=80, elem_classes=["tool-button"], elem_id=f"{prefix}-reuse-seed"
        )
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
        skip_cfg_after=skip_cfg,
        deep_cache=deep_cache,
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
            model_choices(engine),
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
        refresh = gr.Button(
            "Refresh",
            size="sm",
            scale=0,
            min_width=80,
            elem_classes=["tool-button"],
            elem_id=f"{prefix}-refresh-models",
        )

    def refresh_models(current: str, current_vae: str):
        problems = engine.refresh_models()
        names = engine.registry.names
        for problem in problems:
            gr.Warning(problem)
        return (
            gr.Dropdown(choices=model_choices(engine), value=current if current in names else engine.default_model),
            gr.Dropdown(choices=vae_choices(engine), value=current_vae if current_vae in engine.registry.vaes else ""),
        )

    # One public endpoint (txt2img's) is enough for API clients; the other tabs' buttons stay private.
    api = {"api_name": "refresh_models"} if prefix == "txt2img" else {"api_visibility": "private"}
    refresh.click(refresh_models, inputs=[model, vae], outputs=[model, vae], queue=False, **api)
    return model, vae


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


def limit_slider(label: str, limit: Any, value: float, elem_id: str, **kwargs: Any) -> gr.Slider:
    """A slider over a validator limit (``field_limits``): its range and (unless given) step are the backend's."""
    options = {"step": limit.step, **kwargs}
    return FieldSlider(limit.minimum, limit.maximum, value=value, label=label, elem_id=elem_id, **options)


def _wire_control_updates(studio: Studio, c: CommonControls, size_from_image: bool) -> None:
    """Quick UI-only events: no queue, not part of the public API."""
    c.random_seed.click(lambda: -1, outputs=c.seed, **QUIET)

    # .input (the user's own choice), not .change: a preset or PNG info sets both together (ui/schedule.py), and a
    # second event racing theirs would read the old schedule and overwrite theirs.
    c.sampler.input(schedule_dropdown, inputs=[c.sampler, c.schedule], outputs=c.schedule, **QUIET)

    def model_defaults(name: str):
        if studio.engine.needs_download(name):
            # Said at once, and the size and steps stay as they are: the model cannot run here.
            gr.Warning(needs_download_message(name))
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        d = studio.engine.registry.get(name).defaults
        if size_from_image:
            return gr.skip(), gr.skip(), d.steps, d.guidance_scale
        return d.width, d.height, d.steps, d.guidance_scale

    # .input, not .change: a preset that sets the model must not have its own values overwritten.
    c.model.input(model_defaults, inputs=c.model, outputs=[c.width, c.height, c.steps, c.guidance_scale], **TOASTING)


@dataclass
class TabHandle:
    """What the app needs of a built tab to wire "Send to …" between tabs."""

    tab_id: str
    controls: CommonControls
    out: OutputControls
    image_input: gr.components.Component | None = None  # where a sent image lands
    fields: dict[str, gr.components.Component] = field(default_factory=dict)  # tab-only request fields


SEND_TARGETS = {"img2img": "Send to img2img", "inpaint": "Send to inpaint", "controlnet": "Send to ControlNet"}


def build_output_block(
    prefix: str, lead: Callable[[], Any] | None = None, gallery_label: str = "Images", gallery_height: int = 480
) -> OutputControls:
    """Generate/Stop, then the results. ``lead`` builds what comes first under the buttons (the grid's sheet)."""
    with gr.Row(elem_classes=["run-buttons"]):
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id=f"{prefix}-stop")  # live only mid-run
    if lead is not None:
        lead()
    # Not interactive: an output, so no "Drop Media Here" upload prompt while it is empty.
    gallery = gr.Gallery(
        label=gallery_label,
        format="png",
        columns=2,
        height=gallery_height,
        interactive=False,
        elem_id=f"{prefix}-gallery",
    )
    with gr.Row():
        send = {
            target: gr.Button(label, size="sm", elem_id=f"{prefix}-send-{target}")
            for target, label in SEND_TARGETS.items()
        }
    # Empty (not 0) until a run has finished; the API still returns an int.
    seed_used = gr.Number(
        label="Seed used",
        value=None,
        placeholder="after a run",
        precision=0,
        interactive=False,
        elem_id=f"{prefix}-seed-used",
    )
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
    caller: gr.Request,
    progress: gr.Progress,
    extras: Callable[[GenerationResult | None], tuple[Any, ...]] = lambda result: (),
    runner: Any = None,
    final: Callable[[Any], tuple[Any, ...]] | None = None,
    *,
    tab: str,
) -> Iterator[tuple[Any, ...]]:
    """The body of every tab's handler: (gallery, infotext, seed used, *extras) while running and at the end.

    ``extras`` maps the final result (None while running) to the tab's additional outputs. ``runner`` (default the
    engine) is anything with ``Engine.run``'s signature, e.g. the sampler grid's; ``final`` maps its result to
    (gallery, infotext, seed used).
    """
    run = studio.cancels.start(owner_of(caller), tab, address_of(caller))
    began = time.monotonic()
    try:
        for item in run_streaming(runner or studio.engine, request, run.event):
            if isinstance(item, StepEvent):
                run.step, run.total = item.step, item.total
                desc = getattr(item, "desc", None) or f"Step {item.step}/{item.total}"  # a grid names its cell
                progress((item.step, item.total), desc=desc)  # for API clients; the page shows the line below
                desc = progress_line(desc, item.step, item.total, time.monotonic() - began)
                if item.preview is not None:
                    # A grid shows its finished cells too, the running one's preview last.
                    yield [*getattr(item, "finished", ()), item.preview], desc, gr.skip(), *_skips(extras)
            else:
                run.completed = True
                for warning in getattr(item, "warnings", ()):
                    gr.Warning(warning)
                yield *(final or _final)(item), *extras(item)
    except ValidationError as err:
        raise refuse(f"{err.field}: {err}") from None
    except (ModelUnavailable, ValueError) as err:  # ValueError: a pipeline refusing its arguments
        raise refuse(str(err)) from None
    except Cancelled:
        # The last preview stays in the gallery: what existed when Stop was pressed.
        yield gr.skip(), stopped_message(run.step, run.total), gr.skip(), *_skips(extras)
    finally:
        studio.cancels.finish(run)


def progress_line(desc: str, step: int, total: int, elapsed: float, width: int = 12) -> str:
    """One line that says it all while a run goes, under the live preview (which stays visible):
    ``Step 5/20 ▰▰▰▱▱▱▱▱▱▱▱▱ 1.2 s, about 3.6 s left``."""
    done = round(width * step / total) if total else 0
    left = f", about {elapsed / step * (total - step):.1f} s left" if 0 < step < total else ""
    return f"{desc} {'▰' * done}{'▱' * (width - done)} {elapsed:.1f} s{left}"


def owner_of(request: gr.Request) -> str:
    """Who a run belongs to: login name, page session and client address together."""
    return owner_key(getattr(request, "username", None), request.session_hash, address_of(request))


def address_of(request: gr.Request) -> str:
    client = getattr(request, "client", None)
    return getattr(client, "host", "") or ""


def queued_jobs(blocks: gr.Blocks | None) -> list[tuple[str, str, str]]:
    """(owner, address, endpoint) of every generation job waiting in Gradio's queue or running.

    Gradio has no public view of its queue, so this reads its event lists; tests/test_shared_demo.py fails if
    they change. Counting the queue itself (not our own bookkeeping) means a job a client cancelled, or a page
    that went away, stops counting at once.
    """
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return []
    events = [event for waiting in queue.event_queue_per_concurrency_id.values() for event in waiting.queue]
    events += [event for job in getattr(queue, "active_jobs", None) or [] if job for event in job]
    jobs = []
    for event in events:
        if event.concurrency_id != "gpu":
            continue
        host = getattr(getattr(event.request, "client", None), "host", "") or ""
        jobs.append((owner_key(event.username, event.session_hash, host), host, event.fn.api_name or ""))
    return jobs


def stopped_message(step: int, total: int) -> str:
    if total:
        return f"Stopped at step {step}/{total}; the picture shown is that step's preview. Nothing was saved."
    return "Stopped before it started. Nothing was saved."


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
        wire_preset_row(studio.engine.presets, controls.presets, targets, studio.preset_storage)

    # Stop acts on the running run through the registry (its ``start``), and Gradio's own ``cancels`` drops this
    # page's run of this tab still waiting in the queue. The per-client bound is checked where jobs join the queue
    # (ui/queue_share.py).
    # Stop is live only while this tab's run is queued or running: one chain, so the three always come in order.
    started = out.generate.click(lambda: gr.Button(interactive=True), None, out.stop, **QUIET)
    generation = started.then(
        handler,
        inputs=controls.inputs() + extra_inputs,
        outputs=out.outputs() + (extra_outputs or []),
        api_name=api_name,
        concurrency_id="gpu",
        # No overlay over the outputs: the live preview, the progress line and the last seed stay readable.
        show_progress="minimal",
    )

    generation.then(lambda: gr.Button(interactive=False), None, out.stop, **QUIET)

    def stop(request: gr.Request) -> Any:
        runs = studio.cancels.cancel(owner_of(request), api_name)
        idle = gr.Button(interactive=False)
        if runs:
            return stopped_message(runs[0].step, runs[0].total), idle
        # Still queued (Gradio's cancel drops it) or already over: the last result stays on screen.
        return gr.skip(), idle

    # Only this tab's runs of this caller. Gradio's own cancel (tied to this page's session and this event) also
    # drops a run still waiting in the queue at once, instead of a spinner until other people's runs end.
    out.stop.click(stop, outputs=[out.infotext, out.stop], queue=False, api_visibility="private", cancels=[generation])
    controls.reuse_seed.click(
        lambda s: -1 if s is None else s, out.seed_used, controls.seed, queue=False, api_visibility="private"
    )
