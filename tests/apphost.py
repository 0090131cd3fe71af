"""Launch the real app in-process on a free loopback port (shared by the API and browser tests)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from backend.generation.engine import Engine
from backend.serving.logins import Logins
from ui.app import build_demo, launch_options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(engine: Engine, api: bool = False, auth: tuple[str, str] | Logins | None = None) -> Iterator[str]:
    """``api``: also the A1111 API, as ``app.py --api`` mounts it, before the server answers (its state is
    ``serve.api_state``); ``auth``: one user, or ``Logins``, as ``--auth``/``--auth-file`` give them."""
    logins = Logins.from_pairs([auth]) if isinstance(auth, tuple) else auth
    demo = build_demo(engine)
    port = free_port()
    lifespan = None
    if api:
        from api.routes import api_lifespan
        from ui.app import queued_events

        def mounted(state) -> None:
            serve.api_state = state

        flags = {"server_name": "127.0.0.1", "port": port}
        lifespan = api_lifespan(engine, logins, lambda: queued_events(demo), flags, mounted)
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(engine, logins, lifespan),
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
