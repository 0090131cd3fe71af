"""A shared demo: Stop acts on its own tab's runs for its own caller; one client cannot fill the shared queue."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError

from backend.engine import Engine
from backend.settings import Settings
from ui.session import CancelRegistry, TooManyJobs, check_share, owner_key

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


def test_a_queued_run_stopped_before_it_starts_starts_stopped():
    reg = CancelRegistry()
    run = reg.enqueue(ALICE, "txt2img", "10.0.0.1")
    reg.cancel(ALICE, "txt2img")
    assert reg.start(ALICE, "txt2img") is run and run.event.is_set()  # its turn: it ends at once


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


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("shared-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, jobs_per_client=2))
    with serve(engine) as url:
        yield url


LONG = dict(prompt="a long picture", steps=40, width=128, height=128, batch_size=2, model=TINY, seed=1)


@pytest.mark.api
def test_one_api_client_cannot_fill_the_queue(app):
    greedy, other = Client(app, verbose=False), Client(app, verbose=False)
    jobs = [greedy.submit(**LONG, api_name="/txt2img") for _ in range(2)]
    time.sleep(2)  # both joined the queue
    with pytest.raises(ValidationError, match="limit is 2 per person"):
        greedy.predict(**LONG, api_name="/txt2img")
    polite = other.submit(**{**LONG, "steps": 2}, api_name="/txt2img")  # another client still gets a place
    for job in (*jobs, polite):
        gallery, _, _ = job.result(timeout=600)
        assert len(gallery) == 2
    # Once the greedy client's runs are done, it may queue again.
    gallery, _, _ = greedy.predict(**{**LONG, "steps": 2}, api_name="/txt2img")
    assert len(gallery) == 2
