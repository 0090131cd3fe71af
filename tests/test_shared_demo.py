"""A shared demo: Stop acts on its own tab's runs for its own caller; one client cannot fill the shared queue."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError

from backend.engine import Engine
from backend.settings import Settings
from ui.session import CancelRegistry, TooManyJobs, owner_key

from .apphost import serve
from .conftest import TINY

ALICE = owner_key(None, "page-1", "10.0.0.1")


def test_stop_acts_on_the_run_of_its_own_tab_only():
    reg = CancelRegistry()
    txt = reg.start(ALICE, "txt2img", "10.0.0.1")  # running
    queued = reg.enqueue(ALICE, "img2img", "10.0.0.1")  # same page, another tab, waiting
    stopped = reg.cancel(ALICE, "txt2img")
    assert stopped == [txt] and txt.event.is_set()
    assert not queued.event.is_set()
    assert reg.start(ALICE, "img2img") is queued  # the img2img run still goes when its turn comes


def test_a_session_hash_alone_cannot_stop_someone_elses_run():
    reg = CancelRegistry()
    run = reg.start(ALICE, "txt2img", "10.0.0.1")
    # Same session hash, but another address, or another login: not the owner.
    assert reg.cancel(owner_key(None, "page-1", "10.0.0.66"), "txt2img") == []
    assert reg.cancel(owner_key("mallory", "page-1", "10.0.0.1"), "txt2img") == []
    assert not run.event.is_set()
    assert reg.cancel(ALICE, "txt2img") == [run] and run.event.is_set()


def test_a_queued_run_stopped_before_it_starts_starts_stopped_and_stops_counting():
    reg = CancelRegistry(limit=1)
    run = reg.enqueue(ALICE, "txt2img", "10.0.0.1")
    with pytest.raises(TooManyJobs, match="limit is 1 per person"):
        reg.enqueue(ALICE, "txt2img", "10.0.0.1")
    reg.cancel(ALICE, "txt2img")
    assert reg.start(ALICE, "txt2img") is run and run.event.is_set()  # its turn: it ends at once
    reg.enqueue(ALICE, "txt2img", "10.0.0.1")  # a stopped run no longer counts against the limit


def test_one_address_is_bounded_too():
    reg = CancelRegistry(limit=1, address_factor=2)
    reg.enqueue(owner_key(None, "a", "10.0.0.9"), "txt2img", "10.0.0.9")
    reg.enqueue(owner_key(None, "b", "10.0.0.9"), "txt2img", "10.0.0.9")
    with pytest.raises(TooManyJobs, match="network address.*limit is 2"):
        reg.enqueue(owner_key(None, "c", "10.0.0.9"), "txt2img", "10.0.0.9")
    reg.enqueue(owner_key(None, "d", "10.0.0.10"), "txt2img", "10.0.0.10")  # another address is not affected


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("shared-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, jobs_per_client=2))
    with serve(engine) as url:
        yield url


SLOW = dict(prompt="a slow picture", steps=150, width=256, height=256, batch_size=2, model=TINY, seed=1)


@pytest.mark.api
def test_one_api_client_cannot_fill_the_queue(app):
    greedy, other = Client(app, verbose=False), Client(app, verbose=False)
    jobs = [greedy.submit(**SLOW, api_name="/txt2img") for _ in range(2)]
    time.sleep(2)  # both joined the queue
    with pytest.raises(ValidationError, match="limit is 2 per person"):
        greedy.predict(**SLOW, api_name="/txt2img")
    polite = other.submit(**SLOW, api_name="/txt2img")  # another client still gets a place
    time.sleep(1)
    assert polite.status().code.name != "FINISHED" or polite.exception() is None
    for job in (*jobs[:2], polite):
        job.cancel()
    # Once the greedy client's runs are gone, it may queue again and its job completes.
    deadline = time.monotonic() + 60
    while True:
        try:
            result = greedy.predict(**{**SLOW, "steps": 2}, api_name="/txt2img")
            break
        except ValidationError as err:  # its cancelled runs are still winding down
            assert "limit is 2" in str(err) and time.monotonic() < deadline
            time.sleep(1)
    assert result[0]
