"""What every group of routes shares: the API's state (engine, jobs, the options A1111 lets a caller change), the
login check, and A1111's error shape, also for request bodies FastAPI itself refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from backend.generation.engine import Engine
from backend.schema.errors import ValidationError
from backend.serving.logins import Logins

from .access import basic_auth
from .codec import Limits
from .jobs import Jobs
from .models import ErrorResponse

SD = "/sdapi/v1"
ERRORS: dict[int | str, dict[str, Any]] = {422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}


@dataclass
class ApiState:
    engine: Engine
    jobs: Jobs
    auth: Logins | None
    model: str  # the API's current checkpoint (A1111's sd_model_checkpoint option)
    clip_skip: int = 1  # A1111's CLIP_stop_at_last_layers option: the default of later requests
    vae: str = ""  # A1111's sd_vae option ("" = the model's own, A1111's "Automatic"): the default of later requests
    flags: dict[str, Any] = field(default_factory=dict)  # how the server was started, as A1111's cmd-flags name it
    login: Callable = field(init=False, repr=False)  # the login dependency every route shares (api.access)

    def __post_init__(self) -> None:
        self.login = basic_auth(self.auth)

    def vae_name(self, value: Any) -> str:
        """An ``sd_vae`` value as the engine names VAEs: "Automatic"/"None" = the model's own; a file name or a VAE's
        name = that VAE. Refused by name when the VAE folders have no such file."""
        if value in (None, "", "Automatic", "None"):
            return ""
        vaes = self.engine.registry.vaes
        found = [name for name, path in vaes.items() if value in (name, path.name)] if isinstance(value, str) else []
        if not found:
            have = ", ".join(["Automatic", "None", *(path.name for path in vaes.values())])
            raise ValidationError("sd_vae", f"unknown VAE {value!r}; choose one of: {have}")
        return found[0]

    def limits(self) -> Limits:
        settings = self.engine.settings
        return Limits(settings.max_upload_mb * 2**20, settings.max_image_pixels)


def error_body(error: str, detail: Any, body: Any, errors: str) -> dict[str, Any]:
    """A1111's error shape."""
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def refusal(field: str, message: str, status: int = 422, error: str = "ValidationError") -> JSONResponse:
    detail = [{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}]
    return JSONResponse(error_body(error, detail, "", f"{field}: {message}"), status_code=status)


class A1111Route(APIRoute):
    """Request-body errors answer in A1111's shape (routes added after start-up cannot register a handler)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as err:
                detail = [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in err.errors()
                ]
                fields = "; ".join(f"{'.'.join(str(p) for p in d['loc'] if p != 'body')}: {d['msg']}" for d in detail)
                return JSONResponse(error_body("RequestValidationError", detail, "", fields), status_code=422)

        return route
