"""What Gradio's login leaves open, closed in front of it (an ASGI middleware on the app Gradio builds).

- Password guessing: ``POST /login`` from an address the brake holds is answered 429 with the wait; every
  answer Gradio gives is counted (a refusal as a failure, a success clears the address).
- The login page: Gradio embeds the API description (endpoint, model and style names) in the HTML it serves to
  anonymous visitors; for a page that asks for a login it is replaced by an empty description.
"""

from __future__ import annotations

import json
import re
from typing import Any

from backend.serving.logins import Logins

_AUTH_REQUIRED = re.compile(rb'"auth_required":\s*true')
_API_INFO = re.compile(rb"(window\.gradio_api_info\s*=\s*)(.*?)(;\s*</script>)", re.S)
_EMPTY_INFO = b'{"named_endpoints": {}, "unnamed_endpoints": {}}'


class LoginGuard:
    def __init__(self, app: Any, logins: Logins):
        self.app = app
        self.logins = logins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/login"):
            await self._login(scope, receive, send)
        elif scope["method"] == "GET":
            await self._page(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _login(self, scope: dict, receive: Any, send: Any) -> None:
        address = (scope.get("client") or ("", 0))[0]
        wait = self.logins.brake.wait(address)
        if wait > 0:
            body = json.dumps(
                {"detail": f"Too many failed logins from your address; try again in {int(wait) + 1} s."}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        status: dict[str, int] = {}

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") == 200:
            self.logins.brake.succeeded(address)
        elif status.get("code") in (400, 401):
            self.logins.brake.failed(address)

    async def _page(self, scope: dict, receive: Any, send: Any) -> None:
        """HTML answers are held whole and cleaned when they are a login page; anything else streams through."""
        held: dict[str, Any] = {"start": None, "body": b"", "html": False}

        async def hold(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                held["html"] = b"text/html" in headers.get(b"content-type", b"")
                if not held["html"]:
                    await send(message)
                else:
                    held["start"] = message
                return
            if message["type"] != "http.response.body" or not held["html"]:
                await send(message)
                return
            held["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            body = held["body"]
            if _AUTH_REQUIRED.search(body):
                body = _API_INFO.sub(lambda m: m.group(1) + _EMPTY_INFO + m.group(3), body, count=1)
            start = held["start"]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)
