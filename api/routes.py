"""FastAPI routes for ``/sdapi/v1`` and the ControlNet extension's ``/controlnet``, on the Gradio server's app.

``mount_api(app, engine, …)`` adds them; everything runs through the one ``Engine`` the UI uses. ``api_lifespan``
does it as the server starts, before it answers its first request (Gradio's ``launch(app_kwargs={"lifespan": …})``),
so ``/sdapi/v1`` answers from the moment the page does. Each group of routes registers itself from its own module
(``api.routes_*``), in the order the docs list them; the shared state and error shape are ``api.state``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from backend.generation.engine import Engine
from backend.serving.logins import Logins

from .jobs import Jobs
from .routes_controlnet import add_controlnet
from .routes_generation import add_generation, add_progress
from .routes_lists import add_absent, add_lists, add_networks, add_options
from .routes_pictures import add_extras, add_png_info
from .routes_server import add_checkpoint, add_refresh, add_server
from .state import A1111Route, ApiState

log = logging.getLogger(__name__)
DOCS_PATH = "/docs"
SCHEMA_PATH = "/docs/openapi.json"
# Each adds its routes to the router; this order is the routes' order in the docs.
ROUTE_GROUPS = (
    add_generation,
    add_options,
    add_lists,
    add_extras,
    add_networks,
    add_png_info,
    add_progress,
    add_refresh,
    add_checkpoint,
    add_server,
    add_absent,
    add_controlnet,
)


def build_router(state: ApiState) -> APIRouter:
    """Every API route, each behind the login (a failed login is a 401 whatever the route)."""
    router = APIRouter(route_class=A1111Route, dependencies=[Depends(state.login)])
    for add in ROUTE_GROUPS:
        add(router, state)
    return router


def docs_router(state: ApiState, router: APIRouter) -> APIRouter:
    """The Swagger page and its OpenAPI schema (of ``router``'s routes only), behind the same login."""
    docs = APIRouter(dependencies=[Depends(state.login)])
    schema: dict[str, Any] = {}

    @docs.get(SCHEMA_PATH, include_in_schema=False)
    def openapi() -> JSONResponse:
        if not schema:
            schema.update(get_openapi(title="SD Studio: A1111-compatible API", version="1", routes=router.routes))
        return JSONResponse(schema)

    @docs.get(DOCS_PATH, include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=SCHEMA_PATH, title="SD Studio API")

    return docs


def mount_api(
    app: FastAPI,
    engine: Engine,
    auth: Logins | None = None,
    waiting_elsewhere: Callable[[], int] = lambda: 0,
    flags: dict[str, Any] | None = None,
) -> ApiState:
    """Add the API's routes and its docs page (``/docs``) to ``app``; the same login guards both. ``flags``: how the
    server was started, under A1111's flag names (``cmd-flags``: ``listen``, ``port``…)."""
    jobs = Jobs(engine, engine.settings.queue_size, waiting_elsewhere)
    state = ApiState(engine, jobs, auth, engine.default_model, flags=dict(flags or {}))
    router = build_router(state)
    # Ahead of the Gradio app's own routes, so none of them can shadow ours.
    before = list(app.router.routes)
    app.include_router(router)
    app.include_router(docs_router(state, router))
    added = [r for r in app.router.routes if r not in before]
    app.router.routes[:] = added + before
    log.info("A1111-compatible API at /sdapi/v1 (docs at %s)", DOCS_PATH)
    return state


def api_lifespan(
    engine: Engine,
    auth: Logins | None = None,
    waiting_elsewhere: Callable[[], int] = lambda: 0,
    flags: dict[str, Any] | None = None,
    mounted: Callable[[ApiState], None] = lambda state: None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for the server's app that mounts the API as the server starts: uvicorn runs it before it accepts
    a connection, so no request ever finds the page without the API. ``mounted`` gets the API's state."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mounted(mount_api(app, engine, auth, waiting_elsewhere, flags))
        yield

    return lifespan
