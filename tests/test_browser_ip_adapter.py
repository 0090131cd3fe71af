"""Real browser: the txt2img tab's IP-Adapter accordion (ui/ip_adapter.py) reaches the request."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.generation import ip_adapter
from backend.generation.engine import Engine
from backend.models import tiny
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY
from .test_browser import browser, generate, set_number  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.browser
NAME = "ip-adapter_tiny"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, cache_dir):
    """The app on the tiny model, with a tiny adapter and encoder in its models/ipadapter."""
    out = tmp_path_factory.mktemp("browser-ip")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, user_dir=out / "user",
                             default_model=TINY))
    folder = out / "ipadapter"
    folder.mkdir()
    tiny.save_ip_adapter(folder / f"{NAME}.safetensors", engine.cache.model(TINY).base.unet)
    tiny.save_image_encoder(folder / ip_adapter.ENCODER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SDSTUDIO_IPADAPTER_DIR", str(folder))
        with serve(engine) as url:
            yield url


def test_the_accordion_lists_the_folder_and_its_weight_reaches_the_request(browser, app_url, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    set_number(page, "txt2img-steps", "2")
    set_number(page, "txt2img-seed", "41")
    page.locator("#txt2img-ip-adapter-box").get_by_text("IP-Adapter").first.click()  # open the accordion
    page.locator("#txt2img-ip-adapter input").click()
    page.get_by_role("option", name=NAME).click()
    set_number(page, "txt2img-ip-adapter-weight", "0.5")
    Image.new("RGB", (40, 40), (200, 20, 20)).save(tmp_path / "reference.png")
    page.locator("#txt2img-ip-adapter-image input[type=file]").first.set_input_files(str(tmp_path / "reference.png"))
    page.locator("#txt2img-ip-adapter-image img").first.wait_for(timeout=30_000)
    generate(page, "txt2img", "41")
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert f"IP-Adapter: {NAME}, IP-Adapter weight: 0.5" in text
