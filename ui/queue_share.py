"""The per-client bound, enforced where a job joins Gradio's queue (an ASGI middleware on ``…/queue/join``), and
calls Gradio would answer with a 500 or a bare ``{"error": null}``, answered here with a 4xx that says why.

A Gradio ``validator`` would run the handler's preprocessing at join time, and a failure there (a range error
naming its field) would reach API clients as a bare "400 Bad Request"; so the bound is checked here instead, in
front of Gradio, and only the queue's own jobs are counted (``queued_jobs``). A refusal is answered as
Gradio answers a failed validation (HTTP 422 with the message), which gradio_client raises as a
``ValidationError`` and the page shows.

Every call (``queue/join``, ``run/…``, ``api/…``, ``call/…``) is first checked for what Gradio itself fails on:
an unknown ``fn_index`` or endpoint name (404, where Gradio raises a 500), a UI-only event called by name (404:
the page calls those by ``fn_index``), and, where Gradio fails inside the job and reports ``{"error": null}``, fewer
input values than the event takes or a number or text where a picture or file goes (422, naming the control).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .session import TooManyJobs, check_share, owner_key

GPU = "gpu"  # the concurrency id of every generation event (ui.wiring.wire_generation)
# Gradio's routes that run an event: queue/join and run/predict name it by fn_index, the others by endpoint name.
_CALL = re.compile(r"/(queue/join|run/[^/]+|api/[^/]+|call/[^/]+)/?$")


class QueueShare:
    def __init__(self, app: Any, limit: int, jobs: Callable[[Any], list[tuple[str, str, str]]]):
        self.app = app
        self.limit = limit
        self.jobs = jobs  # the (owner, address, endpoint) of each queued or running generation job, given the Blocks

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        found = _CALL.search(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        join = found.group(1) == "queue/join"
        problem = call_problem(_blocks(scope), found.group(1), body)
        if problem is not None:
            status, why = problem
            await _answer(send, status, _validation(why) if join and status == 422 else {"detail": why})
            return
        refusal, joined = self._refusal(scope, body) if join else (None, None)
        if refusal is not None:
            await _answer(send, 422, _validation(refusal))
            return
        if joined is not None:
            joined()
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refusal(self, scope: dict, body: bytes) -> tuple[str | None, Callable[[], None] | None]:
        """(why the job is refused, or None; what to call once it is let in)."""
        app = scope.get("app")
        blocks = _blocks(scope)
        try:
            data = json.loads(body)
            fn = blocks.fns[int(data["fn_index"])]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None, None  # not ours to judge: Gradio answers malformed joins itself
        if getattr(fn, "concurrency_id", None) != GPU:
            return None, None
        address = (scope.get("client") or ("", 0))[0]
        owner = owner_key(_username(app, scope), data.get("session_hash"), address)
        try:
            check_share([job[:2] for job in self.jobs(blocks)], owner, address, self.limit)
        except TooManyJobs as err:
            return str(err), None
        registry = getattr(blocks, "sd_studio_runs", None)  # ui.app.build_demo puts the Stop registry there
        return None, (lambda: registry.joined(owner, fn.api_name or "")) if registry is not None else None


def _blocks(scope: dict) -> Any:
    app = scope.get("app")
    return app.get_blocks() if app is not None and hasattr(app, "get_blocks") else None


def _validation(message: str) -> dict[str, Any]:
    """A refusal as Gradio words a failed validation (gradio_client raises it as a ValidationError)."""
    return {"detail": [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "prompt"}]}


async def _answer(send: Any, status: int, payload: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def call_problem(blocks: Any, route: str, body: bytes) -> tuple[int, str] | None:
    """(status, why) for a call Gradio would fail on with a 500 or ``{"error": null}``; None for the others, and
    for anything Gradio answers well itself (malformed JSON, a missing session)."""
    fns = getattr(blocks, "fns", None)
    if not isinstance(fns, dict):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = route.partition("/")[2]
    index = data.get("fn_index")
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)  # Gradio's body model takes "3" for 3
    if index is not None or name == "predict":
        if isinstance(index, bool) or not isinstance(index, int) or index not in fns:
            return (
                404,
                f"there is no event with fn_index {index!r}; this app's endpoints are listed at /gradio_api/info",
            )
        fn = fns[index]
    elif route == "queue/join":
        return None  # Gradio answers a join without fn_index itself (400)
    else:
        fn = next((f for f in fns.values() if f.api_name == name), None)
        if fn is None or getattr(fn, "api_visibility", "public") == "private":
            endpoints = ", ".join(f"/{f.api_name}" for f in fns.values() if f.api_visibility == "public")
            return 404, f"there is no endpoint /{name}; this app's endpoints are: {endpoints}"
    values = data.get("data")
    needed = len(getattr(fn, "inputs", ()) or ())
    if isinstance(values, list) and len(values) < needed and not getattr(fn, "cancels", None):
        label = f"/{fn.api_name}" if fn.api_name else f"fn_index {index}"
        return 422, f"{label} takes {needed} input values; {len(values)} were sent"
    if isinstance(values, list):
        return _not_a_file(fn, values)
    return None


def _not_a_file(fn: Any, values: list) -> tuple[int, str] | None:
    """A picture or file input sent a number or a text: Gradio's own check of its file model fails there without
    naming anything ({"error": null}); refused naming the control."""
    from gradio.data_classes import GradioModel

    props = set(getattr(fn, "component_prop_inputs", None) or ())
    for i, (block, value) in enumerate(zip(fn.inputs, values, strict=False)):
        model = getattr(block, "data_model", None)
        if value is None or isinstance(value, dict) or i in props or getattr(block, "stateful", False):
            continue
        if isinstance(model, type) and issubclass(model, GradioModel):
            name = getattr(block, "label", None) or getattr(block, "elem_id", None) or f"input {i}"
            return 422, f"{name}: {value!r} is not a file: send one as gradio_client's handle_file(path) does, or null"
    return None


def _username(app: Any, scope: dict) -> str | None:
    """The login of the caller, as Gradio finds it for ``gr.Request.username`` (its access-token cookie)."""
    cookies: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                cookies[name] = val
    cookie_id = getattr(app, "cookie_id", "")
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return getattr(app, "tokens", {}).get(token) if token else None


def queued_jobs(blocks: Any) -> list[tuple[str, str, str]]:
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
        if event.concurrency_id != GPU:
            continue
        host = getattr(getattr(event.request, "client", None), "host", "") or ""
        jobs.append((owner_key(event.username, event.session_hash, host), host, event.fn.api_name or ""))
    return jobs
