"""The ``webuiapi`` client's methods for routes SD Studio serves that the other API tests reach only through plain
HTTP (or not at all): the sampler, scheduler, model and latent-mode lists, ControlNet's version, ``skip`` and
``util_wait_for_ready``, each checked for the shape and content A1111 clients read."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import webuiapi

from api import convert
from backend.generation.engine import Engine
from backend.models.upscaler_files import LATENT_MODES
from backend.schema.samplers import SAMPLERS, SCHEDULES, supported_schedules
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def api(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("webuiapi-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, default_model=TINY))
    with serve(engine, api=True) as url:
        yield webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")


def test_samplers_and_schedulers(api):
    samplers = api.get_samplers()
    assert [s["name"] for s in samplers] == list(SAMPLERS)
    assert api.util_get_sampler_names() == sorted(SAMPLERS)  # webuiapi sorts them
    scheduler_names = {s["name"] for s in api.get_schedulers()}
    for item in samplers:
        assert set(item) >= {"name", "aliases", "options"}
        offered = item["options"]["schedulers"]
        assert offered == [convert.scheduler_name(s) for s in supported_schedules(item["name"])]
        assert offered and set(offered) <= scheduler_names  # every offered schedule is a listed scheduler
    schedulers = api.get_schedulers()
    assert [s["label"] for s in schedulers] == list(SCHEDULES)
    assert [s["name"] for s in schedulers] == [convert.scheduler_name(label) for label in SCHEDULES]
    assert api.util_get_scheduler_names() == sorted(s["name"] for s in schedulers)


def test_sd_models_and_the_current_model(api):
    models = api.get_sd_models()
    tiny = next(m for m in models if m["title"] == TINY)
    assert tiny["model_name"] == TINY and tiny["filename"] == "builtin:tiny"
    assert {m["title"] for m in models} == set(api.util_get_model_names())
    assert api.util_get_current_model() == TINY  # the server's default model


def test_latent_upscale_modes_and_controlnet_version(api):
    assert [m["name"] for m in api.get_latent_upscale_modes()] == list(LATENT_MODES)
    assert LATENT_MODES and all(isinstance(m, str) and m for m in LATENT_MODES)
    assert api.controlnet_version() == 2  # the ControlNet extension's API version the routes follow


def test_skip_moves_a_run_on_and_wait_for_ready_returns_when_idle(api):
    assert api.skip() == {"stopped": 0}  # nothing of this caller's is running
    box: dict = {}
    body = {
        "prompt": "a red circle",
        "seed": 3,
        "steps": 12,
        "n_iter": 2,
        "width": 64,
        "height": 64,
        "override_settings": {"sd_model_checkpoint": TINY},
        "force_task_id": "skipped",
    }

    def work():
        box["response"] = requests.post(f"{api.baseurl}/txt2img", json=body, timeout=120)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60
    while api.get_progress()["state"]["sampling_step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = api.get_progress()["state"]
    assert first["job_count"] == 2 and first["job_no"] == 0 and first["sampling_step"] >= 2  # A1111's: n_iter jobs
    assert api.skip() == {"stopped": 1}  # the caller's own job (by its address: webuiapi sends no task id)
    api.util_wait_for_ready(check_interval=0.2)
    assert api.get_progress()["state"]["job_count"] == 0
    thread.join(60)
    response = box["response"]
    assert response.status_code == 200
    # The skipped picture is dropped and the second iteration still makes its own (ignored: 2, stopped: 0).
    assert len(response.json()["images"]) == 1
