"""The per-client bound, enforced where a job joins Gradio's queue (an ASGI middleware on ``…/queue/join``).

A Gradio ``validator`` would run the handler's preprocessing at join time, and a failure there (a range error
naming its field) would reach API clients as a bare "400 Bad Request"; so the bound is checked here instead, in
front of Gradio, and only the queue's own jobs are counted (``queued_jobs``). A refusal is answered as
Gradio answers a failed validation (HTTP 422 with the message), which gradio_client raises as a
``ValidationError`` and the page shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .session import TooManyJobs, check_share, owner_key

GPU = "gpu"  # the concurrency id of every generation event (ui.wiring.wire_generation)


class QueueShare:
    def __init__(self, app: Any, limit: int, jobs: Callable[[Any], list[tuple[str, str, str]]]):
        self.app = app
        self.limit = limit
        self.jobs = jobs  # the (owner, address, endpoint) of each queued or running generation job, given the Blocks

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not scope["path"].rstrip("/").endswith("/queue/join"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal, joined = self._refusal(scope, body)
        if refusal is not None:
            detail = [{"__type__": "validate", "is_valid": False, "message": refusal, "parameter_name": "prompt"}]
            payload = json.dumps({"detail": detail}).encode()
            await send(
                {"type": "http.response.start", "status": 422, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": payload})
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
        blocks = app.get_blocks() if app is not None and hasattr(app, "get_blocks") else None
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
