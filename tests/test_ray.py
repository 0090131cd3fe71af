"""Ray Serve workers: a local Ray instance with two CPU replicas of the tiny-model engine.

One cluster is started for the module (about 15 s); the default run keeps the test that sends concurrent jobs through
the Gradio API, the others (Stop, a replica killed mid-run) are marked slow.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from backend.generation.interrupt import Cancelled
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.serving.wire import pack, unpack
from backend.settings import PROJECT_ROOT, Settings

from .apphost import serve
from .conftest import TINY, endpoint_args, pixels

ARGS = endpoint_args(steps=3)


def test_pictures_cross_as_png_with_their_infotext():
    image = Image.new("RGB", (8, 8), (10, 200, 30))
    image.info["parameters"] = "a cat\nSteps: 3, Seed: 1"
    request = Txt2ImgRequest(prompt="x", model=TINY)
    packed = pack({"request": request, "images": [image], "pair": (image, 3)})
    assert isinstance(packed["images"][0].data, bytes)
    back = unpack(packed)
    assert back["request"] == request and back["pair"][1] == 3
    assert np.array_equal(pixels(back["images"][0]), pixels(image))
    assert back["images"][0].info["parameters"] == image.info["parameters"]


def test_default_app_never_imports_ray():
    code = (
        "import sys, app, ui.app; from backend.generation.engine import Engine; "
        "assert 'ray' not in sys.modules and 'backend.serving.remote' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, timeout=120)


def test_workers_setting_is_checked(settings):
    import dataclasses

    from app import build_engine, parse_args

    assert parse_args(["--workers", "ray", "--ray-replicas", "3"]).ray_replicas == 3
    with pytest.raises(SystemExit, match="must be local or ray"):
        build_engine(dataclasses.replace(settings, workers="threads"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cache_dir):
    pytest.importorskip("ray")  # requirements-dev installs it: CI runs these tests
    from backend.serving import remote

    settings = Settings(
        offline=True,
        cache_dir=cache_dir,
        output_dir=tmp_path_factory.mktemp("ray-out"),
        workers="ray",
        ray_replicas=2,
        ray_gpus_per_replica=0,
        # The replicas plan their own device in their own processes: name the precision the in-process engine
        # compared with them runs (conftest pins it to float32; "auto" would be bf16 on a CPU with native bf16).
        dtype="float32",
    )
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield remote.connect(settings)
    finally:
        remote.shutdown()


def test_concurrent_jobs_through_the_app_run_on_both_replicas(cluster, shared_engine):
    from gradio_client import Client

    engine = cluster
    assert engine.concurrency == 2
    seeds = [11, 12, 13, 14]
    with serve(engine) as url:
        client = Client(url, verbose=False)
        jobs = [client.submit(**{**ARGS, "seed": seed}, api_name="/txt2img") for seed in seeds]
        outputs = [job.result(timeout=180) for job in jobs]
    assert sum(engine.served.values()) >= len(seeds)
    assert len(engine.served) == 2, f"both replicas should have served work: {engine.served}"
    for seed, (gallery, infotext, used) in zip(seeds, outputs, strict=True):
        assert used == seed and parse_infotext(infotext).params["Seed"] == str(seed)
        request = Txt2ImgRequest(**{**ARGS, "seed": seed, "styles": ()})
        local = _one_thread(lambda request=request: shared_engine.run(request)).images[0]
        with Image.open(gallery[0]["image"]) as img:
            assert parse_infotext(read_infotext(img)).params["Seed"] == str(seed)
            assert np.array_equal(pixels(img), pixels(local)), "a replica must give the in-process engine's pixels"


def _one_thread(work):
    """Run ``work`` with one torch thread, as a CPU replica runs: float sums in another order differ in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return work()
    finally:
        torch.set_num_threads(threads)


def test_errors_come_back_as_the_engines_own(cluster):
    with pytest.raises(ValidationError, match="multiple of 8") as err:
        cluster.run(Txt2ImgRequest(**{**ARGS, "width": 100, "styles": ()}))
    assert err.value.field == "width"


def _long_request(seed: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**ARGS, "seed": seed, "steps": 150, "styles": ()})


def _run_in_thread(engine, request, cancel=None, steps=None):
    outcome: dict[str, object] = {}

    def on_step(event):
        if steps is not None:
            steps.append(event.step)

    def work():
        try:
            outcome["result"] = engine.run(request, on_step=on_step, cancel=cancel)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_stop_cancels_only_its_own_job(cluster):
    stop_a = threading.Event()
    steps_a: list[int] = []
    steps_b: list[int] = []
    thread_a, out_a = _run_in_thread(cluster, _long_request(1), stop_a, steps_a)
    thread_b, out_b = _run_in_thread(cluster, _long_request(2), threading.Event(), steps_b)
    _wait_for(lambda: steps_a and steps_b)
    stop_a.set()
    thread_a.join(60)
    assert isinstance(out_a.get("error"), Cancelled)
    assert len(steps_a) < 150, "the replica must stop the run, not finish it"
    thread_b.join(180)
    assert "result" in out_b, out_b.get("error")
    assert steps_b[-1] == 150


@pytest.mark.slow
def test_a_replica_killed_mid_job_fails_that_job_only(cluster):
    import ray
    from ray import serve

    from backend.serving.remote import APP_NAME, WorkerLost

    def replicas():
        return [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#")
        ]

    assert len(replicas()) == 2
    steps_a: list[int] = []
    steps_b: list[int] = []
    thread_a, out_a = _run_in_thread(cluster, _long_request(3), threading.Event(), steps_a)
    _wait_for(lambda: steps_a)
    thread_b, out_b = _run_in_thread(cluster, _long_request(4), threading.Event(), steps_b)
    _wait_for(lambda: steps_b)
    # One job per replica (max_ongoing_requests=1): killing either replica hits exactly one of the two jobs.
    victim = replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace="serve"), no_restart=True)
    thread_a.join(180)
    thread_b.join(180)
    outcomes = [out_a, out_b]
    failed = [o for o in outcomes if "error" in o]
    assert len(failed) == 1, outcomes
    assert isinstance(failed[0]["error"], WorkerLost)
    assert "generate again" in str(failed[0]["error"])
    finished = next(o for o in outcomes if "result" in o)
    assert len(finished["result"].images) == 1
    # Serve replaces the lost replica; the app serves the next job.
    _wait_for(lambda: serve.status().applications[APP_NAME].status == "RUNNING", timeout=180)
    result = cluster.run(Txt2ImgRequest(**{**ARGS, "seed": 9, "styles": ()}))
    assert result.seeds == [9]
