"""Real browser: Chromium drives the txt2img tab like a person would."""

from __future__ import annotations

import os
import shutil

import pytest

from backend.engine import Engine
from backend.settings import Settings

from .apphost import serve

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return os.environ.get("SDSTUDIO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("SDSTUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required for browser tests (Debian: apt-get install chromium)")
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, cache_dir):
    engine = Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("browser-out"), cache_dir=cache_dir))
    with serve(engine) as url:
        yield url


def set_number(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input[type=number]").first
    field.fill(value)
    field.press("Tab")


def test_generate_shows_images_seed_and_parameters(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#startup-notice").wait_for()
    page.locator("#txt2img-prompt textarea").fill("a red circle on a blue background")
    page.locator("#txt2img-negative textarea").fill("green")
    set_number(page, "txt2img-seed", "4242")
    set_number(page, "txt2img-steps", "3")
    page.locator("#txt2img-generate").click()
    infotext = page.locator("#txt2img-infotext textarea")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.includes('Seed: 4242')", timeout=60_000
    )
    text = infotext.input_value()
    assert text.startswith("a red circle on a blue background\nNegative prompt: green\nSteps: 3,")
    assert page.locator("#txt2img-seed-used input").input_value() == "4242"
    assert page.locator("#txt2img-gallery img").count() >= 1
    # The seed buttons: reuse puts the used seed back, dice sets random (-1).
    page.locator("#txt2img-random-seed").click()
    page.wait_for_function("() => document.querySelector('#txt2img-seed input').value === '-1'")
    page.locator("#txt2img-reuse-seed").click()
    page.wait_for_function("() => document.querySelector('#txt2img-seed input').value === '4242'")
    page.close()


def test_bad_size_shows_error_and_app_keeps_working(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a blue square")
    set_number(page, "txt2img-steps", "2")
    set_number(page, "txt2img-width", "100")
    page.locator("#txt2img-generate").click()
    page.get_by_text("not a multiple of 8").first.wait_for(timeout=30_000)
    set_number(page, "txt2img-width", "64")
    set_number(page, "txt2img-seed", "9")
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.includes('Seed: 9')", timeout=60_000
    )
    page.close()


def test_stop_button_stops_the_run(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a slow picture")
    set_number(page, "txt2img-steps", "150")
    page.locator("#txt2img-generate").click()
    # Live progress: the parameters box shows the step while the run goes.
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Step ')", timeout=60_000
    )
    page.locator("#txt2img-stop").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Stopped')", timeout=60_000
    )
    page.close()
