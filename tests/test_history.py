"""The History tab's index: updated on write, searched by words/model/day newest first and paged, rebuilt from the
PNGs, incremental, per owner, Delete to the trash; and the /history endpoint on the demo model."""

from __future__ import annotations

import os
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gradio_client import Client
from PIL import Image

from api.routes import mount_api
from backend.generation.engine import Engine
from backend.library import history as history_module
from backend.library.history import (
    INDEX_NAME,
    TRASH_NAME,
    UNOWNED,
    History,
    Query,
    login_owner,
    owner_digest,
)
from backend.library.infotext import parse_infotext
from backend.library.outputs import OutputWriter, write_png_atomic
from backend.schema.requests import Txt2ImgRequest
from backend.serving.logins import Brake, Logins
from backend.settings import Settings
from ui.studio import Studio, history_owner
from ui.tab_history import load_picture

from .apphost import serve
from .conftest import TINY
from .test_browser import browser, generate, set_number  # noqa: F401  (the shared Chromium fixture)

DEMO = "Demo shapes (offline)"
ALICE, BOB = owner_digest("login\x00alice"), owner_digest("login\x00bob")


def infotext(prompt: str, model: str = "Tiny", seed: int = 1) -> str:
    return f"{prompt}\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: {seed}, Size: 8x8, Model: {model}"


def picture(root, rel: str, text: str, mtime: int) -> str:
    """A PNG as another tool would leave it, with its parameters and a chosen mtime (seconds)."""
    path = write_png_atomic(Image.new("RGB", (8, 8), (mtime % 256, 0, 0)), root / rel, text)
    os.utime(path, (mtime, mtime))
    return rel


@pytest.fixture
def folder(tmp_path):
    """Five pictures over two days and two models, oldest first."""
    root = tmp_path / "outputs"
    picture(root, "2026-01-01/00001-1.png", infotext("a red circle on blue", "Tiny"), 1_000)
    picture(root, "2026-01-01/00002-2.png", infotext("a green square", "Tiny"), 2_000)
    picture(root, "2026-01-02/00001-3.png", infotext("red circles, many", "Demo"), 3_000)
    picture(root, "2026-01-02/00002-4.png", infotext("a blue triangle", "Demo"), 4_000)
    picture(root, "2026-01-02/00003-5.png", infotext("Circle of friends", "Demo"), 5_000)
    return root


def paths(page) -> list[str]:
    return [entry.path.split("/")[-1] for entry in page.entries]


def test_the_index_is_updated_when_a_picture_is_written(tmp_path):
    writer, history = OutputWriter(tmp_path), History(tmp_path)
    writer.on_saved.append(history.add)
    path = writer.save(Image.new("RGB", (8, 8)), infotext("a lone star", "Tiny", 9), 9)
    (found,) = history.search(None, Query("star")).entries  # no scan: the write itself indexed it
    assert history.file(found) == path and found.model == "Tiny" and "Seed: 9" in found.infotext


def test_search_by_words_model_and_day_newest_first(folder):
    history = History(folder)
    assert history.scan() == (5, 0)
    assert paths(history.search(None)) == ["00003-5.png", "00002-4.png", "00001-3.png", "00002-2.png", "00001-1.png"]
    # Words match the start of prompt words, any case, all of them.
    assert paths(history.search(None, Query("circle"))) == ["00003-5.png", "00001-3.png", "00001-1.png"]
    assert paths(history.search(None, Query("red circ"))) == ["00001-3.png", "00001-1.png"]
    assert paths(history.search(None, Query("circle", model="Tiny"))) == ["00001-1.png"]
    assert paths(history.search(None, Query(day="2026-01-01"))) == ["00002-2.png", "00001-1.png"]
    assert history.search(None, Query("hexagon")).total == 0
    assert history.values("model", None) == ["Demo", "Tiny"]
    assert history.values("day", None) == ["2026-01-02", "2026-01-01"]


def test_a_word_matching_many_pictures_gives_the_same_pages(folder, monkeypatch):
    """Past MANY_MATCHES the page is found by walking the date index instead of sorting: same answer."""
    history = History(folder)
    history.scan()
    sorted_pages = [paths(history.search(None, Query("circle"), n, page_size=2)) for n in (1, 2)]
    monkeypatch.setattr(history_module, "MANY_MATCHES", 0)
    assert [paths(history.search(None, Query("circle"), n, page_size=2)) for n in (1, 2)] == sorted_pages
    assert history.search(None, Query("circle")).total == 3


def test_paging(folder):
    history = History(folder)
    history.scan()
    first, second, last = (history.search(None, Query(), page, page_size=2) for page in (1, 2, 3))
    assert (first.total, first.pages) == (5, 3)
    assert paths(first) + paths(second) + paths(last) == paths(history.search(None))
    assert history.search(None, Query(), 99, page_size=2).page == 3  # past the end: the last page


def test_rebuild_after_the_index_is_lost_gives_the_same_results(folder):
    history = History(folder)
    history.scan()
    history.claim([folder / "2026-01-02/00003-5.png"], "login\x00alice")
    before = [(e.path, e.owner, e.model, e.day, e.infotext) for e in history.search(None).entries]
    history.close()
    (folder / INDEX_NAME).unlink()
    rebuilt = History(folder)
    assert rebuilt.search(None).total == 0  # opening reads no folder
    assert rebuilt.scan() == (5, 0)
    assert [(e.path, e.owner, e.model, e.day, e.infotext) for e in rebuilt.search(None).entries] == before
    assert paths(rebuilt.search([ALICE])) == ["00003-5.png"]  # who owns what came back from the owners log


def test_an_index_of_another_version_or_damaged_is_rebuilt(folder):
    History(folder).scan()  # (closed as it is dropped)
    db = sqlite3.connect(folder / INDEX_NAME)
    with db:
        db.execute("UPDATE meta SET value = 'old' WHERE key = 'version'")
    db.close()
    history = History(folder)
    assert history.search(None).total == 0 and history.scan() == (5, 0)
    history.close()
    (folder / INDEX_NAME).write_bytes(b"not a database at all" * 100)  # damaged: it is only a cache
    damaged = History(folder)
    damaged.scan()
    assert paths(damaged.search(None)) == ["00003-5.png", "00002-4.png", "00001-3.png", "00002-2.png", "00001-1.png"]


def test_a_picture_another_tool_drops_in_is_picked_up_without_rereading_the_rest(folder, monkeypatch):
    history = History(folder)
    history.scan()
    reads = []
    real = history_module.read_parameters
    monkeypatch.setattr(history_module, "read_parameters", lambda path: reads.append(path.name) or real(path))
    assert history.scan() == (0, 0) and reads == []  # nothing changed: no folder listed, no file read
    picture(folder, "2026-01-02/00004-6.png", infotext("a purple circle", "A1111 model"), 6_000)
    picture(folder, "elsewhere/deep/x.png", infotext("a circle from a script"), 500)
    assert history.scan() == (2, 0)
    assert sorted(reads) == ["00004-6.png", "x.png"]  # only the new files were read
    assert paths(history.search(None, Query("purple"))) == ["00004-6.png"]
    (folder / "2026-01-01/00002-2.png").unlink()  # deleted outside the app
    assert history.scan() == (0, 1) and history.search(None, Query("square")).total == 0


def test_delete_moves_the_picture_to_the_trash(folder):
    history = History(folder)
    history.scan()
    history.claim([folder / "2026-01-02/00003-5.png"], "login\x00alice")
    (entry,) = history.search([ALICE]).entries
    with pytest.raises(KeyError):
        history.trash(entry.id, [BOB])  # not Bob's to delete
    where = history.trash(entry.id, [ALICE])
    assert where == folder / TRASH_NAME / "2026-01-02/00003-5.png"
    assert where.exists() and not (folder / "2026-01-02/00003-5.png").exists()  # moved, not gone
    assert parse_infotext(Image.open(where).info["parameters"]).prompt == "Circle of friends"
    assert history.search([ALICE]).total == 0
    assert history.scan() == (0, 0) and history.search(None).total == 4  # the trash is never indexed


def test_each_owner_sees_only_their_own_pictures(folder):
    history = History(folder)
    history.scan()
    history.claim([folder / "2026-01-01/00001-1.png", folder / "2026-01-02/00001-3.png"], "login\x00alice")
    history.claim([folder / "2026-01-02/00002-4.png"], "login\x00bob")
    assert paths(history.search([ALICE])) == ["00001-3.png", "00001-1.png"]
    assert paths(history.search([BOB])) == ["00002-4.png"]
    assert paths(history.search([BOB], Query("circle"))) == []
    assert history.values("model", [BOB]) == ["Demo"]
    alice_id = history.search([ALICE]).entries[0].id
    assert history.get(alice_id, [BOB]) is None and history.get(alice_id, [ALICE]) is not None


def test_a_picture_saved_by_another_process_is_indexed_when_claimed(folder):
    """A Ray replica saves into the same folder without this process's hook: claiming it indexes it too."""
    history = History(folder)
    history.scan()
    rel = picture(folder, "2026-01-02/00004-6.png", infotext("a replica's circle"), 6_000)
    history.claim([folder / rel], "login\x00alice")
    assert paths(history.search([ALICE], Query("replica"))) == ["00004-6.png"]


def test_send_loads_the_picture_and_its_parameters(folder):
    history = History(folder)
    history.scan()
    ids = [e.id for e in history.search(None, Query("triangle")).entries]
    image, text = load_picture(history, ids, 0)
    assert image.size == (8, 8) and parse_infotext(text).request_fields()["prompt"] == "a blue triangle"


@pytest.mark.api
def test_history_endpoint_finds_a_demo_picture_by_a_word_of_its_prompt(tmp_path, cache_dir):
    """Semantic, on the demo model: a picture generated through the page's API is found by "circle", with its
    parameters, by its own caller only."""
    engine = Engine(Settings(offline=True, output_dir=tmp_path / "outputs", cache_dir=cache_dir))
    with serve(engine) as url:
        mine, theirs = Client(url, verbose=False), Client(url, verbose=False)
        # As docs/features.md calls it: the other keywords take their defaults.
        prompt = "a red circle on a blue background"
        made, _, _ = mine.predict(prompt=prompt, model=DEMO, width=64, height=64, steps=4, seed=11, api_name="/txt2img")
        # Made without the page (as the A1111 API or a script would): nobody's, shown at the server's own machine.
        engine.run(Txt2ImgRequest(prompt="a green square", model=DEMO, width=64, height=64, steps=2))
        gallery, entries, summary, page = mine.predict(query="circle", page=1, api_name="/history")
        assert summary == "Page 1 of 1 · 1 picture" and page == 1
        (entry,) = entries
        fields = parse_infotext(entry["infotext"]).request_fields()
        assert fields["prompt"] == "a red circle on a blue background" and fields["model"] == DEMO
        assert fields["seed"] == 11 and entry["model"] == DEMO
        with Image.open(gallery[0]["image"]) as found, Image.open(made[0]["image"]) as generated:
            assert np.array_equal(np.asarray(found.convert("RGB")), np.asarray(generated.convert("RGB")))
        everything = mine.predict(query="", page=1, api_name="/history")[1]
        assert [e["infotext"].split("\n")[0] for e in everything] == ["a green square", prompt]  # newest first
        # Another page session (same address): the unclaimed picture, never the first session's circle.
        assert [e["infotext"].split("\n")[0] for e in theirs.predict(page=1, api_name="/history")[1]] == [
            "a green square"
        ]
        assert theirs.predict(query="circle", page=1, api_name="/history")[1] == []


@pytest.mark.slow
@pytest.mark.browser
def test_the_tab_shows_sends_and_deletes_in_the_page(browser, tmp_path, cache_dir):  # noqa: F811
    """The page: the tab opens on the newest picture; a word finds it; clicking shows its parameters; Send fills
    img2img; Delete moves it to the trash."""
    out = tmp_path / "outputs"
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, user_dir=tmp_path / "user"))
    with serve(engine) as url:
        page = browser.new_page()
        page.goto(url)
        page.locator("#txt2img-prompt textarea").fill("a red circle on a blue background")
        set_number(page, "txt2img-seed", "4242")
        set_number(page, "txt2img-steps", "2")
        generate(page, "txt2img", "4242")
        summary = "document.querySelector('#history-summary').innerText"
        page.get_by_role("tab", name="History").click()
        page.wait_for_function(f"() => {summary}.includes('Page 1 of 1 · 1 picture')", timeout=60_000)
        page.locator("#history-query textarea").fill("circle")
        page.locator("#history-search").click()
        page.locator("#history-gallery img").first.click()
        infotext = "document.querySelector('#history-infotext textarea').value"
        page.wait_for_function(f"() => {infotext}.includes('Seed: 4242')", timeout=60_000)
        page.locator("#history-send-img2img").click()
        prompt = "document.querySelector('#img2img-prompt textarea').value"
        page.wait_for_function(f"() => {prompt} === 'a red circle on a blue background'", timeout=60_000)
        page.get_by_role("tab", name="History").click()
        page.locator("#history-gallery img").first.click()
        page.wait_for_function(f"() => {infotext}.includes('Seed: 4242')", timeout=60_000)
        page.locator("#history-delete").click()
        page.wait_for_function(f"() => {summary}.includes('No saved pictures')", timeout=60_000)
        assert [p.name for p in (out / TRASH_NAME).rglob("*.png")] == ["00001-4242.png"]
        assert not list(out.glob("2*/*.png"))


def test_the_a1111_api_claims_a_logged_in_callers_pictures_for_the_same_login(tmp_path, cache_dir):
    """Pictures saved through /sdapi/v1 by a login are that login's in the History tab (the page's owner key), not
    another login's; without logins they stay unclaimed (shown only at the server's own machine)."""
    for auth in (Logins({"ann": "s3cret", "bob": "pw"}, Brake(attempts=10**6)), None):
        out = tmp_path / ("with" if auth else "without")
        engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))
        history = History(out)
        engine.writer.on_saved.append(history.add)  # as the page's History tab hooks it
        app = FastAPI()
        mount_api(app, engine, auth)
        body = {"prompt": "a red circle", "seed": 3, "steps": 1, "width": 64, "height": 64, "save_images": True,
                "override_settings": {"sd_model_checkpoint": TINY}}  # fmt: skip
        answer = TestClient(app).post("/sdapi/v1/txt2img", json=body, auth=("ann", "s3cret") if auth else None)
        assert answer.status_code == 200, answer.text
        ann = history.search([owner_digest(login_owner("ann"))], Query("circle")).entries
        everyone = history.search(None, Query("circle")).entries
        assert len(everyone) == 1
        if auth:
            assert [e.path for e in ann] == [everyone[0].path]
            assert history.search([owner_digest(login_owner("bob")), UNOWNED]).entries == []
            # The page's own key for the login is the same one.
            assert history_owner(SimpleNamespace(username="ann")) == login_owner("ann")
        else:
            assert ann == [] and everyone[0].owner == UNOWNED


def test_every_z_sheet_of_an_xyz_plot_is_claimed(folder):
    """An X/Y/Z plot saves one sheet per Z value: the caller owns all of them, not only the first."""
    history = History(folder)
    history.scan()
    sheets = [folder / "2026-01-02/00001-3.png", folder / "2026-01-02/00002-4.png"]
    result = SimpleNamespace(paths=[folder / "2026-01-01/00001-1.png"], grid_paths=sheets, grid_path=sheets[0])
    studio = Studio(engine=None, cancels=None, history=history)  # type: ignore[arg-type]
    studio.claim(result, SimpleNamespace(username="alice"))
    assert paths(history.search([ALICE])) == ["00002-4.png", "00001-3.png", "00001-1.png"]
