"""A shared demo: Stop acts on its own tab's runs for its own caller; one client cannot fill the shared queue."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError

from backend.generation.engine import Engine
from backend.settings import Settings
from ui.session import CancelRegistry, TooManyJobs, check_share, owner_key

from .apphost import serve
from .conftest import TINY

ALICE = owner_key(None, "page-1", "10.0.0.1")


def test_stop_acts_on_the_run_of_its_own_tab_only():
    reg = CancelRegistry()
    txt = reg.start(ALICE, "txt2img", "10.0.0.1")  # running
    grid = reg.start(ALICE, "sampler_grid", "10.0.0.1")  # same page, another tab (e.g. on another replica)
    assert reg.cancel(ALICE, "txt2img") == [txt] and txt.event.is_set()
    assert not grid.event.is_set()
    reg.finish(txt)
    # Gradio's cancel may end the run before Stop's handler looks: Stop still reports where it ended.
    assert reg.cancel(ALICE, "txt2img") == [txt]
    done = reg.start(ALICE, "txt2img", "10.0.0.1")
    done.completed = True
    reg.finish(done)
    assert reg.cancel(ALICE, "txt2img") == []  # nothing going: Stop leaves the last result alone
    reg.joined(ALICE, "img2img")  # waiting in the queue
    assert len(reg.cancel(ALICE, "img2img")) == 1 and reg.cancel(ALICE, "img2img") == []


def test_a_stop_pressed_before_its_run_joined_the_queue_still_stops_it():
    """On a busy server the page's Stop can reach the server before its own Generate's job has joined the queue."""
    reg = CancelRegistry()
    assert reg.cancel(ALICE, "txt2img") == []  # nothing to stop yet
    reg.joined(ALICE, "txt2img")
    early = reg.start(ALICE, "txt2img", "10.0.0.1")
    assert early.event.is_set()  # ends before its first step
    assert not reg.start(ALICE, "sampler_grid", "10.0.0.1").event.is_set()  # another tab's run is not touched
    reg.finish(early)
    reg.joined(ALICE, "txt2img")
    later = reg.start(ALICE, "txt2img", "10.0.0.1")
    assert not later.event.is_set()  # that Stop was spent
    later.completed = True
    reg.finish(later)
    assert reg.cancel(ALICE, "txt2img") == []  # a Stop just after a run finished is late, not early:
    reg.joined(ALICE, "txt2img")
    assert not reg.start(ALICE, "txt2img", "10.0.0.1").event.is_set()  # the next run is not stopped


def test_a_session_hash_alone_cannot_stop_someone_elses_run():
    reg = CancelRegistry()
    run = reg.start(ALICE, "txt2img", "10.0.0.1")
    # Same session hash, but another address, or another login: not the owner.
    assert reg.cancel(owner_key(None, "page-1", "10.0.0.66"), "txt2img") == []
    assert reg.cancel(owner_key("mallory", "page-1", "10.0.0.1"), "txt2img") == []
    assert not run.event.is_set()
    assert reg.cancel(ALICE, "txt2img") == [run] and run.event.is_set()


def test_the_share_counts_per_person_and_per_address():
    bob = owner_key(None, "b", "10.0.0.9")
    check_share([(ALICE, "10.0.0.1")], ALICE, "10.0.0.1", limit=2)
    with pytest.raises(TooManyJobs, match="limit is 1 per person"):
        check_share([(ALICE, "10.0.0.1")], ALICE, "10.0.0.1", limit=1)
    neighbours = [(owner_key(None, s, "10.0.0.9"), "10.0.0.9") for s in "acd"]
    with pytest.raises(TooManyJobs, match="network address.*limit is 3"):
        check_share(neighbours, bob, "10.0.0.9", limit=1, address_factor=3)
    check_share(neighbours, ALICE, "10.0.0.1", limit=1, address_factor=3)  # another address is not affected
    check_share([(ALICE, "10.0.0.1")] * 9, ALICE, "10.0.0.1", limit=0)  # 0 = no bound


class GatedEngine(Engine):
    """Runs wait at a gate the test opens: jobs stay queued or running exactly as long as the test needs."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def run(self, request, on_step=None, cancel=None):
        self.waiting.release()
        assert self.gate.wait(120), "the test never opened the gate"
        return super().run(request, on_step=on_step, cancel=cancel)


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("shared-out")
    engine = GatedEngine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, jobs_per_client=2))
    with serve(engine) as url:
        yield engine, url


JOB = dict(prompt="a red circle", steps=2, width=64, height=64, batch_size=1, model=TINY, seed=1)


@pytest.mark.api
def test_one_api_client_cannot_fill_the_queue(app):
    engine, url = app
    greedy, other = Client(url, verbose=False), Client(url, verbose=False)
    jobs = [greedy.submit(**JOB, api_name="/txt2img") for _ in range(2)]
    assert engine.waiting.acquire(timeout=60)  # the first runs (held at the gate), the second waits in the queue
    time.sleep(1)
    with pytest.raises(ValidationError, match="limit is 2 per person"):
        greedy.predict(**JOB, api_name="/txt2img")
    polite = other.submit(**JOB, api_name="/txt2img")  # another client still gets a place
    time.sleep(1)
    assert not polite.done()  # queued, not refused
    engine.gate.set()
    for job in (*jobs, polite):
        gallery, _, _ = job.result(timeout=300)
        assert len(gallery) == 1
    # Once the greedy client's runs are done, it may queue again.
    gallery, _, _ = greedy.predict(**JOB, api_name="/txt2img")
    assert len(gallery) == 1
