"""Generating routes: ``txt2img`` and ``img2img`` (A1111 body → request → the shared queue → A1111 response), and
the caller's own job's ``progress``, ``interrupt`` and ``skip``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from backend.images.annotators import PreprocessError
from backend.library.history import History, login_owner
from backend.models.loaders import ModelUnavailable
from backend.schema.errors import ValidationError
from backend.schema.requests import GenerationRequest
from backend.schema.seeds import resolve_seed

from . import convert
from .access import owner
from .codec import encode_png
from .jobs import Job, QueueFull
from .models import GenerationBody, ImageResponse, Img2ImgBody, ProgressResponse, TaskBody, Txt2ImgBody
from .state import ERRORS, SD, ApiState, error_body, refusal


def _iterations(first: GenerationRequest, body: GenerationBody, runs: int) -> list[GenerationRequest]:
    """n_iter: iteration n starts at seed + n × batch_size, and so does its variation seed, as in A1111."""
    if runs > 1:
        total = body.batch_size * runs
        first = first.replace(seed=resolve_seed(first.seed, total), subseed=resolve_seed(first.subseed, total))
    step = first.batch_size
    later = [first.replace(seed=first.seed + n * step, subseed=first.subseed + n * step) for n in range(1, runs)]
    return [first, *later]


def generate(state: ApiState, body, make: Callable[..., GenerationRequest], login: str | None, http: Request):
    """One A1111 generation call: the options' defaults, the conversion, the queue, the response or refusal."""
    # The options' clip skip and VAE, unless the request overrides them.
    overrides = body.override_settings
    sent = dict(overrides) if isinstance(overrides, dict) else {}
    if overrides is None or isinstance(overrides, dict):
        body.override_settings = {"CLIP_stop_at_last_layers": state.clip_skip, "sd_vae": state.vae, **sent}
    try:
        try:
            body.override_settings["sd_vae"] = state.vae_name(body.override_settings.get("sd_vae"))
        except ValidationError as err:
            raise ValidationError("override_settings.sd_vae", str(err)) from None
        first = make(body, state.model, state.limits())
        runs = convert.iterations(body)
    except ValidationError as err:
        return refusal(err.field, str(err))
    requests = _iterations(first, body, runs)
    try:
        job = state.jobs.admit(owner(login, http), body.force_task_id, runs)
    except QueueFull as err:
        return JSONResponse(error_body("QueueFull", str(err), "", str(err)), status_code=503)
    try:
        results, interrupted = state.jobs.run(job, requests)
    except ValidationError as err:
        return refusal(convert.caller_field(err.field, requests[0]), str(err))
    except ModelUnavailable as err:
        return refusal("override_settings.sd_model_checkpoint", str(err))
    except PreprocessError as err:
        return refusal("alwayson_scripts.controlnet", str(err))
    if not body.override_settings_restore_afterwards:
        keep_overrides(state, sent, first)
    if login is not None:
        claim(state, [path for result in results for path in result.paths], login)
    return convert.response(results, body, interrupted)


def claim(state: ApiState, paths: list, login: str) -> None:
    """A logged-in caller's saved pictures are theirs in the History tab, as the page's are (the same owner key).
    Without logins they stay unclaimed: an address is no identity, and the page shows unclaimed pictures only at
    the server's own machine."""
    hooks = getattr(getattr(state.engine, "writer", None), "on_saved", [])
    for history in {getattr(hook, "__self__", None) for hook in hooks}:
        if isinstance(history, History) and paths:
            history.claim(paths, login_owner(login))


def keep_overrides(state: ApiState, sent: dict[str, Any], ran: GenerationRequest) -> None:
    """``override_settings_restore_afterwards: false``: the options the request overrode keep its values (as the
    request ran them) for later requests, as after ``POST options``."""
    if "sd_model_checkpoint" in sent:
        state.model = ran.model
    if "CLIP_stop_at_last_layers" in sent:
        state.clip_skip = ran.clip_skip
    if "sd_vae" in sent:
        state.vae = ran.vae


def add_generation(router: APIRouter, state: ApiState) -> None:
    login_of = state.login

    @router.post(f"{SD}/txt2img", response_model=ImageResponse, responses=ERRORS, tags=["sdapi"])
    def txt2img(body: Txt2ImgBody, http: Request, login: str | None = Depends(login_of)):
        return generate(state, body, convert.txt2img_request, login, http)

    @router.post(f"{SD}/img2img", response_model=ImageResponse, responses=ERRORS, tags=["sdapi"])
    def img2img(body: Img2ImgBody, http: Request, login: str | None = Depends(login_of)):
        return generate(state, body, convert.img2img_request, login, http)


def _progress(job: Job | None, skip_current_image: bool) -> ProgressResponse:
    """A1111's progress of the caller's job: ``job_count`` its n_iter iterations (0 without a job), ``job_no`` those
    done, ``sampling_step`` of ``sampling_steps`` in the current pass, ``progress`` over the whole job (0..1) and
    ``eta_relative`` the seconds left at the pace so far."""
    running = job is not None and bool(job.started)
    elapsed = time.monotonic() - job.started if running else 0.0
    done = job.progress if job else 0.0
    eta = elapsed / done - elapsed if done > 0 else 0.0
    image = None
    if job is not None and job.preview is not None and not skip_current_image:
        image = encode_png(job.preview)
    return ProgressResponse(
        progress=done,
        eta_relative=eta,
        state={
            "skipped": bool(job and job.skip.is_set()),
            "interrupted": bool(job and job.interrupt.is_set()),
            "job": "txt2img" if running else "",
            "job_count": job.total_runs if job else 0,
            "job_timestamp": "0",
            "job_no": job.runs_done if job else 0,
            "sampling_step": job.step if job else 0,
            "sampling_steps": job.steps if job else 0,
        },
        current_image=image,
        textinfo=None,
        current_task=job.task_id if running else None,
    )


def add_progress(router: APIRouter, state: ApiState) -> None:
    login_of = state.login

    @router.get(f"{SD}/progress", response_model=ProgressResponse, tags=["sdapi"])
    def progress(
        http: Request,
        skip_current_image: bool = False,
        id_task: str | None = None,
        login: str | None = Depends(login_of),
    ):
        caller = owner(login, http) if login is not None or not id_task else None
        job, _ = state.jobs.progress(caller, id_task)
        return _progress(job, skip_current_image)

    def stop(http: Request, body: TaskBody | None, login: str | None, skip: bool) -> dict[str, Any]:
        task = (body.id_task if body else None) or http.query_params.get("id_task")
        caller = owner(login, http) if login is not None or not task else None
        return {"stopped": state.jobs.stop(caller, task, skip=skip)}

    @router.post(f"{SD}/interrupt", tags=["sdapi"])
    def interrupt(http: Request, body: TaskBody | None = None, login: str | None = Depends(login_of)):
        """Stop the caller's own jobs: its login's, else those with ``id_task``, else its address's."""
        return stop(http, body, login, skip=False)

    @router.post(f"{SD}/skip", tags=["sdapi"])
    def skip(http: Request, body: TaskBody | None = None, login: str | None = Depends(login_of)):
        """Skip the picture the caller's own job is making (on to its next n_iter iteration)."""
        return stop(http, body, login, skip=True)
