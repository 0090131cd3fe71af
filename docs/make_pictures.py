"""Regenerate the pictures of the README and docs/features.md offline with the shipped demo model.

    python docs/make_pictures.py

- docs/grid.png: a sampler grid (samplers × steps) on the demo model.
- docs/screenshot.png: the app served locally, one generation in Chromium, screenshot of the page.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import sync_playwright  # noqa: E402

from backend.generation.engine import Engine  # noqa: E402
from backend.grid.plan import GridRequest  # noqa: E402
from backend.grid.runner import GridRunner  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests.apphost import serve  # noqa: E402
from tests.test_browser import CHROMIUM_ARGS  # noqa: E402

PROMPT = "a yellow triangle on a blue background"


def make_grid(engine: Engine) -> None:
    defaults = engine.registry.get(engine.default_model).defaults
    request = GridRequest(
        prompt=PROMPT,
        seed=7,
        width=64,
        height=64,
        guidance_scale=defaults.guidance_scale,  # what the page starts with for this model
        schedule="Automatic",
        samplers=["Euler a", "DPM++ 2M", "DDIM", "UniPC", "Heun"],
        steps_list=[4, 8, 16, 24],
    )
    result = GridRunner(engine).run(request)
    result.grid.save(ROOT / "docs" / "grid.png")


def make_screenshot(engine: Engine) -> None:
    with serve(engine) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.locator("#txt2img-prompt textarea").fill(PROMPT)
        page.locator("#txt2img-batch input[type=number]").fill("4")
        page.locator("#txt2img-batch input[type=number]").press("Tab")
        page.locator("#txt2img-generate").click()
        page.wait_for_function("() => document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')")
        # Every picture decoded and Stop idle again: the page as it rests after a run.
        page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('#txt2img-gallery img')];"
            " return imgs.length >= 4 && imgs.every((i) => i.complete && i.naturalWidth > 0); }"
        )
        page.wait_for_function("() => document.querySelector('#txt2img-stop').disabled")
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)
        browser.close()


def main() -> None:
    engine = Engine(Settings.from_env(offline=True, output_dir=Path(tempfile.mkdtemp()), save_outputs=False))
    make_grid(engine)
    make_screenshot(engine)


if __name__ == "__main__":
    main()
