"""The body of every tab's generation handler: run the request, stream previews and progress, end with the result.

A refusal (bad input, a model that cannot run here) becomes one toast naming the field; Stop leaves the last
preview on screen with a line saying where the run stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import StepEvent
from backend.models.loaders import ModelUnavailable
from backend.schema.errors import ValidationError
from backend.schema.requests import GenerationRequest, GenerationResult

from .events import refuse
from .session import owner_key
from .streaming import run_streaming
from .studio import Studio

Extras = Callable[[GenerationResult | None], tuple[Any, ...]]


def stream_generation(
    studio: Studio,
    request: GenerationRequest,
    caller: gr.Request,
    progress: gr.Progress,
    extras: Extras = lambda result: (),
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
                studio.claim(item, caller)  # the History tab shows the saved pictures to their caller only
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


def stopped_message(step: int, total: int) -> str:
    if total:
        return f"Stopped at step {step}/{total}; the picture shown is that step's preview. Nothing was saved."
    return "Stopped before it started. Nothing was saved."


def _skips(extras: Extras) -> tuple[Any, ...]:
    return tuple(gr.skip() for _ in extras(None))


def _final(result: GenerationResult) -> tuple[list[Any], str, int]:
    # Never the saved files: the output folder is the server owner's, not served to anyone. Each picture carries
    # its infotext in ``info``, which Gradio writes into the PNG it caches for this session, so downloads keep it.
    images = result.images
    took = f"{result.request.steps} steps · {result.seconds:.1f} s"
    captions = [f"seed {s} · {took}" for s in result.seeds]
    return list(zip(images, captions, strict=True)), result.infotext, result.seeds[0]
