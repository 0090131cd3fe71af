"""Run the engine in a worker thread and stream its step events to a Gradio generator."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import StepEvent
from backend.schema.requests import GenerationRequest, GenerationResult

_DONE = object()


def run_streaming(
    engine: Engine, request: GenerationRequest, cancel: threading.Event
) -> Iterator[StepEvent | GenerationResult]:
    """Yield each ``StepEvent`` while the run goes, then the ``GenerationResult``.

    Raises what the engine raised (``ValidationError``, ``ModelUnavailable``, ``Cancelled``…). If the
    consumer stops iterating (the browser went away), the run is cancelled rather than left running.
    """
    events: queue.Queue[object] = queue.Queue()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = engine.run(request, on_step=events.put, cancel=cancel)
        except BaseException as err:  # handed to the consumer below
            outcome["error"] = err
        finally:
            events.put(_DONE)

    # The run sees this event's context (Gradio's request): ZeroGPU reads it to bill the visitor's own GPU quota.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(work,), name="sd-studio-run", daemon=True)
    worker.start()
    try:
        while (event := events.get()) is not _DONE:
            yield event  # type: ignore[misc]
    finally:
        if worker.is_alive():
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    yield outcome["result"]  # type: ignore[misc]


__all__ = ["run_streaming", "Cancelled"]
