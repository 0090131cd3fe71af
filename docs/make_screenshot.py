"""Regenerate docs/screenshot.png: serve the app offline, generate once in Chromium, screenshot the page.

python docs/make_screenshot.py
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

from backend.engine import Engine  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests.apphost import serve  # noqa: E402
from tests.test_browser import CHROMIUM_ARGS  # noqa: E402


def main() -> None:
    out = Path(tempfile.mkdtemp())
    engine = Engine(Settings.from_env(offline=True, output_dir=out))
    with serve(engine) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.locator("#txt2img-prompt textarea").fill("a red circle on a blue background")
        page.locator("#txt2img-generate").click()
        page.wait_for_function("() => document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')")
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
