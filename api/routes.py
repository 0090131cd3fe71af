"""FastAPI routes for ``/sdapi/v1`` and the ControlNet extension's ``/controlnet``, on the Gradio server's app.

``mount_api(app, engine, …)`` adds them; everything runs through the one ``Engine`` the UI uses.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from backend.annotators import PreprocessError
from backend.engine import Engine
from backend.images import size_from_image
from backend.logins import Logins
from backend.pipelines import ModelUnavailable
from backend.pnginfo import PngInfoError, parameters_dict, read_parameters
from backend.requests import ControlNetRequest, ControlUnit, GenerationRequest, ValidationError
from backend.samplers import SAMPLERS, SCHEDULES, supported_schedules
from backend.upscalers import LANCZOS, LATENT_MODES, model_files

from . import convert
from .jobs import Jobs, QueueFull
from .models import (
    DetectBody,
    EmbeddingsResponse,
    ErrorResponse,
    ExtrasBody,
    ExtrasResponse,
    ImageResponse,
    Img2ImgBody,
    LatentModeItem,
    ModelItem,
    PngInfoBody,
    PngInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    StyleItem,
    TaskBody,
    Txt2ImgBody,
    UpscalerItem,
)

log = logging.getLogger(__name__)
DOCS_PATH = "/docs"
SCHEMA_PATH = "/docs/openapi.json"


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


@dataclass
class ApiState:
    engine: Engine
    jobs: Jobs
    auth: Logins | None
    model: str  # the API's current checkpoint (A1111's sd_model_checkpoint option)
    clip_skip: int = 1  # A1111's CLIP_stop_at_last_layers option: the default of later requests

    def limits(self) -> convert.Limits:
        settings = self.engine.settings
        return convert.Limits(settings.max_upload_mb * 2**20, settings.max_image_pixels)


def _basic_auth(state: ApiState) -> Callable:
    security = HTTPBasic(auto_error=False)

    def check(request: Request, credentials: HTTPBasicCredentials | None = Depends(security)) -> str | None:
        """The caller's login, or None when the server has none. Any failure is a 401 (no route answers)."""
        if state.auth is None:
            return None
        from fastapi import HTTPException

        # The page's login and the API share one brake per address, so guessing here is as slow as there.
        brake, address = state.auth.brake, request.client.host if request.client else ""
        if (wait := brake.wait(address)) > 0:
            raise HTTPException(
                429,
                f"Too many failed logins from your address; try again in {int(wait) + 1} s.",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        if credentials is None or not state.auth.verify(credentials.username, credentials.password):
            if credentials is not None:
                brake.failed(address, credentials.username)
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        brake.succeeded(address)
        return credentials.username

    return check


def _owner(login: str | None, request: Request) -> str:
    if login is not None:
        return f"user:{login}"
    return f"addr:{request.client.host if request.client else '?'}"


def build_router(state: ApiState) -> APIRouter:
    login_of = _basic_auth(state)
    router = APIRouter(route_class=A1111Route, dependencies=[Depends(login_of)])
    sd = "/sdapi/v1"
    errors = {422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    def generate(body, make: Callable[..., GenerationRequest], login: str | None, http: Request):
        limits = state.limits()
        # The options' clip skip, unless the request overrides it.
        overrides = body.override_settings
        if overrides is None or isinstance(overrides, dict):
            body.override_settings = {"CLIP_stop_at_last_layers": state.clip_skip, **(overrides or {})}
        try:
            first = make(body, state.model, limits)
            runs = convert.iterations(body)
        except ValidationError as err:
            return refusal(err.field, str(err))
        # n_iter: iteration n starts at seed + n × batch_size, as in A1111.
        requests = [first]
        if runs > 1:
            if first.seed == -1:
                first = first.replace(seed=secrets.randbelow(2**32 - body.batch_size * runs))
                requests = [first]
            requests += [first.replace(seed=first.seed + n * first.batch_size) for n in range(1, runs)]
        try:
            job = state.jobs.admit(_owner(login, http), body.force_task_id, runs)
        except QueueFull as err:
            return JSONResponse(error_body("QueueFull", str(err), "", str(err)), status_code=503)
        try:
            results, interrupted = state.jobs.run(job, requests)
        except ValidationError as err:
            return refusal(convert.caller_field(err.field, first), str(err))
        except (ModelUnavailable, PreprocessError) as err:
            return refusal(
                "override_settings.sd_model_checkpoint"
                if isinstance(err, ModelUnavailable)
                else "alwayson_scripts.controlnet",
                str(err),
            )
        return convert.response(results, body, interrupted)

    @router.post(f"{sd}/txt2img", response_model=ImageResponse, responses=errors, tags=["sdapi"])
    def txt2img(body: Txt2ImgBody, http: Request, login: str | None = Depends(login_of)):
        return generate(body, convert.txt2img_request, login, http)

    @router.post(f"{sd}/img2img", response_model=ImageResponse, responses=errors, tags=["sdapi"])
    def img2img(body: Img2ImgBody, http: Request, login: str | None = Depends(login_of)):
        return generate(body, convert.img2img_request, login, http)

    @router.get(f"{sd}/options", tags=["sdapi"])
    def get_options() -> dict[str, Any]:
        settings = state.engine.settings
        return {
            "sd_model_checkpoint": state.model,
            "sd_checkpoint_hash": None,
            "CLIP_stop_at_last_layers": state.clip_skip,
            "samples_save": settings.save_outputs,
            "samples_format": "png",
            "live_previews_enable": settings.preview_every > 0,
            "show_progress_every_n_steps": settings.preview_every,
        }

    @router.post(f"{sd}/options", responses=errors, tags=["sdapi"])
    def set_options(options: dict[str, Any]):
        """``sd_model_checkpoint`` and ``CLIP_stop_at_last_layers`` change later requests; other known A1111 options
        are accepted and ignored."""
        if "sd_model_checkpoint" in options:
            name = options["sd_model_checkpoint"]
            title = name.split(" [")[0] if isinstance(name, str) else name
            names = state.engine.registry.names
            if title not in names:
                return refusal("sd_model_checkpoint", f"unknown model {name!r}; choose one of: {', '.join(names)}")
            state.model = title  # loaded by the next run, under the run lock
        if "CLIP_stop_at_last_layers" in options:
            clip = options["CLIP_stop_at_last_layers"]
            if isinstance(clip, bool) or not isinstance(clip, int) or not 1 <= clip <= 12:
                return refusal("CLIP_stop_at_last_layers", "give a whole number from 1 to 12")
            state.clip_skip = clip
        return None

    @router.get(f"{sd}/sd-models", response_model=list[ModelItem], tags=["sdapi"])
    def sd_models():
        registry = state.engine.registry
        return [ModelItem(title=name, model_name=name, filename=registry.get(name).source) for name in registry.names]

    @router.get(f"{sd}/samplers", response_model=list[SamplerItem], tags=["sdapi"])
    def samplers():
        return [
            SamplerItem(
                name=name,
                aliases=[],
                options={"schedulers": [convert.scheduler_name(s) for s in supported_schedules(name)]},
            )
            for name in SAMPLERS
        ]

    @router.get(f"{sd}/schedulers", response_model=list[SchedulerItem], tags=["sdapi"])
    def schedulers():
        return [SchedulerItem(name=convert.scheduler_name(label), label=label) for label in SCHEDULES]

    @router.get(f"{sd}/prompt-styles", response_model=list[StyleItem], tags=["sdapi"])
    def prompt_styles():
        styles = state.engine.presets.styles.values()
        return [StyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt) for s in styles]

    @router.get(f"{sd}/upscalers", response_model=list[UpscalerItem], tags=["sdapi"])
    def upscalers():
        files = model_files(state.engine.settings)
        items = [UpscalerItem(name="None"), UpscalerItem(name=LANCZOS)]
        return items + [UpscalerItem(name=name, model_name=name, model_path=path.name) for name, path in files.items()]

    @router.get(f"{sd}/latent-upscale-modes", response_model=list[LatentModeItem], tags=["sdapi"])
    def latent_upscale_modes():
        return [LatentModeItem(name=name) for name in LATENT_MODES]

    @router.post(f"{sd}/extra-single-image", response_model=ExtrasResponse, responses=errors, tags=["sdapi"])
    def extra_single_image(body: ExtrasBody):
        """Upscale one picture (A1111's Extras); the same upscalers as the Extras tab."""
        limits = state.limits()
        try:
            name, scale = convert.extras_upscaler(body)
            image = convert.decode_image(body.image, "image", limits.max_bytes, limits.max_pixels)
            out = state.engine.upscale(image, name, scale)
        except ValidationError as err:
            field = {"upscaler": "upscaler_1", "scale": "upscaling_resize"}.get(err.field, err.field)
            return refusal(field, str(err))
        return ExtrasResponse(html_info="", image=convert.encode_png(out))

    @router.get(f"{sd}/loras", tags=["sdapi"])
    def loras() -> list[dict[str, Any]]:
        return state.engine.networks.lora_list()

    @router.post(f"{sd}/refresh-loras", tags=["sdapi"])
    def refresh_loras() -> None:
        state.engine.networks.refresh()

    @router.get(f"{sd}/embeddings", response_model=EmbeddingsResponse, tags=["sdapi"])
    def embeddings():
        return EmbeddingsResponse(loaded=state.engine.networks.embedding_list())

    @router.post(f"{sd}/png-info", response_model=PngInfoResponse, responses=errors, tags=["sdapi"])
    def png_info(body: PngInfoBody):
        import io
        import tempfile

        try:
            image = convert.decode_image(body.image, "image", state.limits().max_bytes, state.limits().max_pixels)
        except ValidationError as err:
            return refusal(err.field, str(err))
        with tempfile.SpooledTemporaryFile() as handle:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=_keep_text(image))
            handle.write(buffer.getvalue())
            handle.seek(0)
            try:
                text, parsed = read_parameters(handle, state.engine.settings.max_image_pixels)
            except PngInfoError:
                return PngInfoResponse(info="", items={}, parameters={})  # A1111: empty info, not an error
        items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
        return PngInfoResponse(info=text, items=items, parameters=_a1111_parameters(parsed))

    @router.get(f"{sd}/progress", response_model=ProgressResponse, tags=["sdapi"])
    def progress(
        http: Request,
        skip_current_image: bool = False,
        id_task: str | None = None,
        login: str | None = Depends(login_of),
    ):
        owner = _owner(login, http) if login is not None or not id_task else None
        job, count = state.jobs.progress(owner, id_task)
        running = job is not None and bool(job.started)
        elapsed = time.monotonic() - job.started if running else 0.0
        done = job.progress if job else 0.0
        eta = elapsed / done - elapsed if done > 0 else 0.0
        image = None
        if job is not None and job.preview is not None and not skip_current_image:
            image = convert.encode_png(job.preview)
        return ProgressResponse(
            progress=done,
            eta_relative=eta,
            state={
                "skipped": bool(job and job.skip.is_set()),
                "interrupted": bool(job and job.interrupt.is_set()),
                "job": "txt2img" if running else "",
                "job_count": count,
                "job_timestamp": "0",
                "job_no": job.runs_done if job else 0,
                "sampling_step": job.step if job else 0,
                "sampling_steps": job.steps if job else 0,
            },
            current_image=image,
            textinfo=None,
            current_task=job.task_id if running else None,
        )

    def stop(http: Request, body: TaskBody | None, login: str | None, skip: bool) -> dict[str, Any]:
        task = (body.id_task if body else None) or http.query_params.get("id_task")
        owner = _owner(login, http) if login is not None or not task else None
        return {"stopped": state.jobs.stop(owner, task, skip=skip)}

    @router.post(f"{sd}/interrupt", tags=["sdapi"])
    def interrupt(http: Request, body: TaskBody | None = None, login: str | None = Depends(login_of)):
        """Stop the caller's own jobs: its login's, else those with ``id_task``, else its address's."""
        return stop(http, body, login, skip=False)

    @router.post(f"{sd}/skip", tags=["sdapi"])
    def skip(http: Request, body: TaskBody | None = None, login: str | None = Depends(login_of)):
        """Skip the picture the caller's own job is making (on to its next n_iter iteration)."""
        return stop(http, body, login, skip=True)

    @router.get("/controlnet/version", tags=["controlnet"])
    def controlnet_version():
        return {"version": 2}

    @router.get("/controlnet/model_list", tags=["controlnet"])
    def controlnet_model_list():
        registry = state.engine.registry
        return {"model_list": sorted({t for name in registry.names for t, _ in registry.get(name).controlnets})}

    @router.get("/controlnet/module_list", tags=["controlnet"])
    def controlnet_module_list(alias_names: bool = False):
        return {"module_list": ["none", *convert.MODULES]}

    @router.post("/controlnet/detect", responses=errors, tags=["controlnet"])
    def controlnet_detect(body: DetectBody):
        module = body.controlnet_module.lower()
        if module not in convert.MODULES:
            return refusal(
                "controlnet_module", f"unknown module {module!r}; choose one of: {', '.join(convert.MODULES)}"
            )
        control_type, (pose_body, hands, face) = convert.MODULES[module]
        pictures = body.controlnet_input_images or body.controlnet_images
        if not pictures:
            return refusal("controlnet_input_images", "send at least one base64 picture")
        limits, settings = state.limits(), state.engine.settings
        maps = []
        for picture in pictures:
            try:
                image = convert.decode_image(picture, "controlnet_input_images", limits.max_bytes, limits.max_pixels)
                width, height = size_from_image(image, settings.max_width, settings.max_height)
                resolution = body.controlnet_processor_res
                low, high = int(body.controlnet_threshold_a), int(body.controlnet_threshold_b)
                unit = ControlUnit(
                    image=image.convert("RGB"),
                    control_type=control_type,
                    low_threshold=low if low > 0 else 100,
                    high_threshold=high if high > 0 else 200,
                    detect_resolution=resolution if resolution > 0 else 0,
                    pose_body=pose_body,
                    pose_hands=hands,
                    pose_face=face,
                )
                request = ControlNetRequest(units=(unit,), width=width, height=height, steps=1)
                maps += state.engine.control_maps(request)
            except ValidationError as err:
                return refusal(
                    convert.control_field(err.field).replace("alwayson_scripts.controlnet.args[0].", "controlnet_"),
                    str(err),
                )
            except PreprocessError as err:
                return refusal("controlnet_module", str(err))
        return {"images": [convert.encode_png(m) for m in maps], "info": "Success"}

    return router


def _keep_text(image) -> Any:
    from backend.outputs import png_info as make_info

    text = image.info.get("parameters")
    return make_info(text) if isinstance(text, str) else None


def _a1111_parameters(parsed) -> dict[str, Any]:
    """The parsed fields under A1111's infotext keys (``Prompt``, ``Steps``, ``CFG scale``…)."""
    fields = parameters_dict(parsed)
    result = dict(parsed.params)
    result.setdefault("Prompt", fields.get("prompt") or "")
    result.setdefault("Negative prompt", fields.get("negative_prompt") or "")
    return result


def mount_api(
    app: FastAPI,
    engine: Engine,
    auth: Logins | None = None,
    waiting_elsewhere: Callable[[], int] = lambda: 0,
) -> ApiState:
    """Add the API's routes and its docs page (``/docs``) to ``app``; the same login guards both."""
    state = ApiState(engine, Jobs(engine, engine.settings.queue_size, waiting_elsewhere), auth, engine.default_model)
    router = build_router(state)
    docs = APIRouter(dependencies=[Depends(_basic_auth(state))])
    schema: dict[str, Any] = {}

    @docs.get(SCHEMA_PATH, include_in_schema=False)
    def openapi() -> JSONResponse:
        if not schema:
            schema.update(get_openapi(title="SD Studio: A1111-compatible API", version="1", routes=router.routes))
        return JSONResponse(schema)

    @docs.get(DOCS_PATH, include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=SCHEMA_PATH, title="SD Studio API")

    # Ahead of the Gradio app's own routes, so none of them can shadow ours.
    before = list(app.router.routes)
    app.include_router(router)
    app.include_router(docs)
    added = [r for r in app.router.routes if r not in before]
    app.router.routes[:] = added + before
    log.info("A1111-compatible API at /sdapi/v1 (docs at %s)", DOCS_PATH)
    return state
