"""Real browser: Chromium drives the txt2img tab like a person would."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from backend.generation.engine import Engine
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
    out = tmp_path_factory.mktemp("browser-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, user_dir=out / "user"))
    with serve(engine) as url:
        yield url


def set_number(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input[type=number]").first
    field.fill(value)
    field.press("Tab")


def generate(page, tab: str, seed: str) -> None:
    """Click the tab's Generate and wait until its parameters show the seed (generous: on a loaded 2-core machine
    the shared server may still be finishing an earlier test's run first)."""
    page.locator(f"#{tab}-generate").click()
    page.wait_for_function(
        f"() => document.querySelector('#{tab}-infotext textarea').value.includes('Seed: {seed}')", timeout=150_000
    )


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
    # The field the message names is outlined and scrolled into view (it is below the fold on small screens).
    page.locator("#txt2img-width.field-error").wait_for(timeout=10_000)
    # The scroll is smooth: wait for it to bring the field into the viewport (it would time out if it never did).
    page.wait_for_function(
        "() => { const r = document.querySelector('#txt2img-width').getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight; }",
        timeout=5_000,
    )
    set_number(page, "txt2img-width", "64")
    set_number(page, "txt2img-seed", "9")
    generate(page, "txt2img", "9")
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


def test_stop_on_one_tab_leaves_the_other_tabs_queued_run(browser, app_url):
    """txt2img running and a sampler grid queued from the same page: txt2img's Stop stops txt2img only."""
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="sampler grid").click()  # the grid set up first, so it joins in a moment
    page.locator("#grid-prompt textarea").fill("a red circle")
    set_number(page, "grid-steps", "2")
    page.locator("#grid-steps-list textarea").fill("1, 2")
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img-prompt textarea").fill("a slow picture")
    set_number(page, "txt2img-steps", "150")
    set_number(page, "txt2img-width", "128")
    set_number(page, "txt2img-height", "128")
    set_number(page, "txt2img-batch", "2")
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Step ')", timeout=60_000
    )
    page.get_by_role("tab", name="sampler grid").click()
    page.locator("#grid-generate").click()  # waits in the queue behind txt2img
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img-stop").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Stopped at step')",
        timeout=60_000,
    )
    page.get_by_role("tab", name="sampler grid").click()
    page.locator("#grid-sheet img").first.wait_for(timeout=120_000)  # the grid ran to the end
    assert not page.locator("#grid-infotext textarea").input_value().startswith("Stopped")
    page.close()


def fetch_image(page, selector: str):
    """The image an <img> shows, fetched over the page's own session."""
    import io

    from PIL import Image

    src = page.locator(selector).first.get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(src).body()))


def test_paint_mask_and_inpaint(browser, app_url, tmp_path, test_image):
    import numpy as np
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    picture = test_image.resize((256, 192))
    picture.save(tmp_path / "in.png")
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    editor = page.locator("#inpaint-editor")
    # Gradio's editor takes a chosen file at once, even before its canvas is set up; a file chosen then never shows,
    # and the editor takes no other file after it. So choose the file only once the editor is ready (it shows its
    # zoom controls then), and start again on a fresh page if the picture still does not arrive.
    for _ in range(3):
        page.goto(app_url)
        page.get_by_role("tab", name="inpaint").click()
        prompt_text = editor.get_by_text("Upload an image")
        prompt_text.wait_for()
        editor.get_by_role("button", name="Zoom in").wait_for(timeout=30_000)
        editor.locator("input[type=file]").first.set_input_files(str(tmp_path / "in.png"))
        try:
            prompt_text.wait_for(state="hidden", timeout=30_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError("the uploaded picture never reached the editor")
    # The editor shows the picture, then zooms it to fit (about 150% in this viewport; the exact figure moves with
    # the page's layout, e.g. a scrollbar): paint once it shows a zoom other than 100%.
    editor.get_by_text(re.compile(r"^(?!100%)\d+%$")).wait_for(timeout=30_000)  # slow on a busy machine
    page.wait_for_timeout(300)
    editor.get_by_role("button", name="Brush").first.click()
    box = editor.locator("canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the picture's centre
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y, steps=10)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a red circle")
    set_number(page, "inpaint-steps", "2")
    set_number(page, "inpaint-seed", "5")
    generate(page, "inpaint", "5")
    assert "Mask blur: 4" in page.locator("#inpaint-infotext textarea").input_value()
    out = np.asarray(fetch_image(page, "#inpaint-gallery img").convert("RGB")).astype(int)
    shown = np.asarray(fetch_image(page, "#inpaint-mask-used img").convert("RGB")).astype(int)
    assert shown.shape == (192, 256, 3)  # aligned to the picture, whatever the canvas size
    # "Mask used" is tinted over the result where the mask is (not white on white): the tint's pixels are the mask.
    mask = np.abs(shown - out).sum(-1) > 60
    ys, xs = np.where(mask)
    # The stroke starts at the picture's centre and goes right: the mask sits there, not elsewhere.
    assert xs.min() < 128 < xs.max() and ys.min() < 96 < ys.max()
    assert xs.max() < 250 and ys.max() < 150 and ys.min() > 40 and mask.mean() < 0.3
    # The brush starts at its page default (the demo model's pictures are small: the 16 px minimum stroke), not
    # Gradio's fixed 25 px radius (a 50 px stroke).
    assert ys.max() - ys.min() < 30
    src = np.asarray(picture).astype(int)
    assert np.array_equal(out[:, :60], src[:, :60])  # left of the stroke: untouched
    page.close()


def test_send_to_inpaint_carries_image_and_parameters(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a green square")
    set_number(page, "txt2img-seed", "31")
    set_number(page, "txt2img-steps", "2")
    generate(page, "txt2img", "31")
    page.locator("#txt2img-send-img2img").click()
    page.locator("#img2img-image img").first.wait_for(timeout=30_000)
    assert page.locator("#img2img-prompt textarea").input_value() == "a green square"
    assert page.locator("#img2img-seed input").input_value() == "31"
    assert page.locator("#img2img-steps input[type=number]").input_value() == "2"
    page.locator("#img2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#img2img-infotext textarea').value.includes('Denoising strength')",
        timeout=60_000,
    )
    assert "Size: 64x64" in page.locator("#img2img-infotext textarea").input_value()
    page.close()


def test_preset_fills_controls_and_reaches_the_request(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a yellow star")
    page.get_by_text("Presets").first.click()
    page.locator("#txt2img-preset input").fill("Fast draft")
    page.keyboard.press("Enter")
    page.locator("#txt2img-preset-apply").click()
    page.wait_for_function("() => document.querySelector('#txt2img-steps input[type=number]').value === '12'")
    set_number(page, "txt2img-seed", "3")
    generate(page, "txt2img", "3")
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert "Steps: 12, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6" in text
    assert page.locator("#txt2img-gallery img").count() == 4  # the preset's batch size
    page.close()


def test_png_info_reads_and_sends_to_txt2img(browser, app_url, tmp_path):
    from PIL import Image

    from backend.library.outputs import write_png_atomic

    text = (
        "a cyan ring\nNegative prompt: dull\nSteps: 7, Sampler: DPM++ 2M Karras, CFG scale: 4.5, Seed: 123, Size: 64x64"
    )
    path = write_png_atomic(Image.new("RGB", (64, 64), "cyan"), tmp_path / "a1111.png", text)
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => document.querySelector('#pnginfo-raw textarea').value.includes('Seed: 123')")
    page.locator("#pnginfo-send-txt2img").click()
    page.wait_for_function("() => document.querySelector('#txt2img-prompt textarea').value === 'a cyan ring'")
    assert page.locator("#txt2img-negative textarea").input_value() == "dull"
    assert page.locator("#txt2img-steps input[type=number]").input_value() == "7"
    assert page.locator("#txt2img-seed input").input_value() == "123"
    assert page.locator("#txt2img-cfg input[type=number]").input_value() == "4.5"
    assert page.locator("#txt2img-schedule input").input_value() == "Karras"
    page.close()


def test_stop_cancels_a_queued_run_and_only_that_users(browser, app_url):
    first, second = browser.new_page(), browser.new_page()  # two users, two sessions
    for page, prompt in ((first, "a long picture"), (second, "a queued picture")):
        page.goto(app_url)
        page.locator("#txt2img-prompt textarea").fill(prompt)
        set_number(page, "txt2img-steps", "150")
    # 256x256 keeps the first run going until its Stop: 150 steps at 64x64 take about 5 s, which a busy machine
    # can spend before that Stop arrives, and a finished run shows no "Stopped" (one CI failure).
    set_number(first, "txt2img-width", "256")
    set_number(first, "txt2img-height", "256")
    first.locator("#txt2img-generate").click()
    first.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Step ')", timeout=60_000
    )
    # Remember whether the second user's run ever draws a step.
    second.evaluate(
        "() => { window.sawStep = false; setInterval(() => { if (document.querySelector("
        "'#txt2img-infotext textarea').value.startsWith('Step ')) window.sawStep = true; }, 20); }"
    )
    second.locator("#txt2img-generate").click()  # waits in the queue behind the first user's run
    second.wait_for_timeout(500)
    second.locator("#txt2img-stop").click()
    # The second user's Stop did not stop the first user's run: it still advances.
    step = first.locator("#txt2img-infotext textarea").input_value()
    first.wait_for_function(
        f"() => {{ const v = document.querySelector('#txt2img-infotext textarea').value; "
        f"return v.startsWith('Step ') && v !== {step!r}; }}",
        timeout=30_000,
    )
    first.locator("#txt2img-stop").click()  # frees the queue: the second run starts, sees its Stop, ends
    for page in (first, second):
        page.wait_for_function(
            "() => document.querySelector('#txt2img-infotext textarea').value.startsWith('Stopped')", timeout=60_000
        )
    assert second.evaluate("() => window.sawStep") is False
    first.close()
    second.close()


def test_controlnet_tab_previews_the_map_and_generates_with_it(browser, app_url, tmp_path):
    from PIL import Image, ImageDraw

    reference = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(reference).rectangle([12, 12, 40, 40], fill="white")
    path = tmp_path / "reference.png"
    reference.save(path)
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="controlnet").click()
    page.locator("#controlnet-image input[type=file]").set_input_files(str(path))
    page.locator("#controlnet-image img").first.wait_for(timeout=30_000)
    assert page.locator("#controlnet-low_threshold").is_visible()
    page.locator("#controlnet-preview").click()
    page.locator("#controlnet-map img").first.wait_for(timeout=60_000)
    page.locator("#controlnet-prompt textarea").fill("a red square on a blue background")
    set_number(page, "controlnet-seed", "9")
    set_number(page, "controlnet-steps", "4")
    page.locator("#controlnet-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#controlnet-infotext textarea').value.includes('ControlNet 0: ')",
        timeout=60_000,
    )
    text = page.locator("#controlnet-infotext textarea").input_value()
    assert "Seed: 9" in text and "Size: 64x64" in text and "Module: canny" in text
    assert page.locator("#controlnet-gallery img").count() == 1
    # Pose: its toggles replace the canny thresholds. The demo model has no pose ControlNet: a clear error,
    # and the tab keeps working.
    page.locator("#controlnet-control-type input").click()
    page.get_by_role("option", name="pose").click()
    page.locator("#controlnet-pose-hands").wait_for()
    assert not page.locator("#controlnet-low_threshold").is_visible()
    page.locator("#controlnet-generate").click()
    page.get_by_text("has no pose ControlNet").first.wait_for(timeout=30_000)
    page.close()


def test_preset_saved_in_one_tab_is_offered_in_another(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_text("Presets").first.click()
    set_number(page, "txt2img-steps", "7")
    page.locator("#txt2img-preset-name textarea").fill("Seven steps")
    page.locator("#txt2img-preset-save").click()
    page.wait_for_function("() => document.querySelector('#txt2img-preset input').value === 'Seven steps'")
    page.get_by_role("tab", name="img2img").click()
    page.get_by_text("Presets").nth(1).click()
    page.locator("#img2img-preset input").click()
    page.get_by_role("option", name="Seven steps").click()
    page.locator("#img2img-preset-apply").click()
    page.wait_for_function("() => document.querySelector('#img2img-steps input[type=number]').value === '7'")
    # It is this browser's: still offered after a reload, never to another visitor.
    page.reload()
    page.get_by_text("Presets").first.click()
    page.locator("#txt2img-preset input").click()
    page.get_by_role("option", name="Seven steps").wait_for()
    page.close()
    stranger = browser.new_context()
    other = stranger.new_page()
    other.goto(app_url)
    other.get_by_text("Presets").first.click()
    other.locator("#txt2img-preset input").click()
    other.get_by_role("option", name="Quality").wait_for()  # the server's presets are offered to everyone
    assert other.get_by_role("option", name="Seven steps").count() == 0
    stranger.close()


def test_send_to_controlnet_carries_the_picture_as_reference(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a white square on a black background")
    set_number(page, "txt2img-seed", "5")
    set_number(page, "txt2img-steps", "2")
    set_number(page, "txt2img-width", "96")
    generate(page, "txt2img", "5")
    page.locator("#txt2img-send-controlnet").click()
    page.locator("#controlnet-image img").first.wait_for(timeout=30_000)
    assert page.locator("#controlnet-prompt textarea").input_value() == "a white square on a black background"
    assert page.locator("#controlnet-seed input").input_value() == "5"
    # The ControlNet tab has its own size (not the picture's): the size is carried too.
    assert page.locator("#controlnet-width input[type=number]").input_value() == "96"
    page.locator("#controlnet-preview").click()
    page.locator("#controlnet-map img").first.wait_for(timeout=60_000)
    page.close()


def _every_ordered_pair(items: list[str]) -> list[str]:
    """A sequence in which every ordered pair of ``items`` (a twice too) stands next to each other once."""
    unused = {i: list(range(len(items))) for i in range(len(items))}
    stack, circuit = [0], []
    while stack:  # Hierholzer's walk on the complete directed graph with self-loops
        if unused[stack[-1]]:
            stack.append(unused[stack[-1]].pop())
        else:
            circuit.append(stack.pop())
    return [items[i] for i in reversed(circuit)]


def test_every_preset_after_every_other_leaves_a_valid_sampler_pair(browser, app_url):
    from backend.library.presets import PresetStore
    from backend.schema.samplers import supported_schedules

    presets = PresetStore.load(Settings().presets_dir, Settings().user_dir).presets
    shipped = [name for name, p in presets.items() if "sampler" in p.values]
    sequence = _every_ordered_pair(shipped)
    assert len(sequence) == len(shipped) ** 2 + 1
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_text("Presets").first.click()
    sampler, schedule = page.locator("#txt2img-sampler input"), page.locator("#txt2img-schedule input")
    for name in sequence:
        page.locator("#txt2img-preset input").fill(name)
        page.keyboard.press("Enter")
        page.locator("#txt2img-preset-apply").click()
        want = presets[name].values
        page.wait_for_function(
            f"() => document.querySelector('#txt2img-sampler input').value === {want['sampler']!r}"
            f" && document.querySelector('#txt2img-schedule input').value === {want['schedule']!r}",
            timeout=10_000,
        )
        assert schedule.input_value() in supported_schedules(sampler.input_value())
    # The reported case, then Generate: no "not in the list of choices" refusal.
    # Each apply lands before the next click: a click while the button's event is pending is dropped (Gradio's
    # trigger_mode "once"), which made this wait time out on a loaded machine.
    for name in ("Quality", "Fast draft"):
        page.locator("#txt2img-preset input").fill(name)
        page.keyboard.press("Enter")
        page.locator("#txt2img-preset-apply").click()
        steps = presets[name].values["steps"]
        page.wait_for_function(
            f"() => document.querySelector('#txt2img-steps input[type=number]').value === '{steps}'"
        )
    page.locator("#txt2img-model input").fill("Tiny (offline test model)")
    page.keyboard.press("Enter")
    set_number(page, "txt2img-steps", "2")
    set_number(page, "txt2img-seed", "8")
    generate(page, "txt2img", "8")
    assert "Sampler: Euler a, Schedule type: Automatic" in page.locator("#txt2img-infotext textarea").input_value()
    page.close()


def test_ctrl_enter_generates_and_output_galleries_offer_no_upload(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    for tab in ("txt2img", "img2img", "inpaint", "controlnet"):
        page.get_by_role("tab", name=tab).click()
        text = page.locator(f"#{tab}-gallery").inner_text()
        assert "Drop" not in text and "Upload" not in text, f"{tab}'s output gallery offers an upload: {text!r}"
    page.get_by_role("tab", name="txt2img").click()
    set_number(page, "txt2img-seed", "21")
    set_number(page, "txt2img-steps", "3")
    box = page.locator("#txt2img-prompt textarea")
    box.fill("a blue square on a yellow background")
    box.press("Control+Enter")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-infotext textarea').value.includes('Seed: 21')", timeout=60_000
    )
    # The caption says what the run took.
    page.locator("#txt2img-gallery img").first.click()
    caption = page.locator("#txt2img-gallery").inner_text()
    assert "seed 21 · 3 steps · " in caption and " s" in caption
    # Tab order: prompt → negative prompt → Generate.
    box.focus()
    box.press("Tab")
    assert page.evaluate("() => document.activeElement.closest('[id]').id") == "txt2img-negative"
    page.locator("#txt2img-negative textarea").press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "txt2img-generate"
    page.close()


def test_hires_accordion_and_extras_tab(browser, app_url, tmp_path, test_image):
    """The hires fix controls reach the run (the picture doubles); Extras upscales an uploaded picture."""
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(app_url)
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    set_number(page, "txt2img-steps", "2")
    set_number(page, "txt2img-seed", "31")
    page.locator("#txt2img-hires").get_by_text("Hires. fix").first.click()  # open the accordion
    page.locator("#txt2img-enable-hr input[type=checkbox]").check()
    set_number(page, "txt2img-hr-steps", "2")
    generate(page, "txt2img", "31")
    text = page.locator("#txt2img-infotext textarea").input_value()
    assert "Hires upscale: 2" in text and "Hires upscaler: Lanczos" in text and "Hires steps: 2" in text
    assert fetch_image(page, "#txt2img-gallery img").size == (128, 128)
    test_image.save(tmp_path / "in.png")
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras-image input[type=file]").first.set_input_files(str(tmp_path / "in.png"))
    page.locator("#extras-image img").first.wait_for(timeout=30_000)
    page.locator("#extras-run").click()
    page.locator("#extras-result img").first.wait_for(timeout=60_000)
    assert fetch_image(page, "#extras-result img").size == (192, 128)
    # PNG info sends the hires fields back to txt2img; a picture made without them turns the hires fix off.
    from PIL import Image

    from backend.library.outputs import write_png_atomic

    base = "a cyan ring\nSteps: 7, Sampler: Euler, CFG scale: 4.5, Seed: {}, Size: 64x64"
    hires = base.format(5) + ", Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent"
    checkbox = page.locator("#txt2img-enable-hr input[type=checkbox]")
    for seed, text, on in ((5, hires, True), (6, base.format(6), False)):
        path = write_png_atomic(Image.new("RGB", (64, 64), "cyan"), tmp_path / f"{seed}.png", text)
        if not on:  # a fresh page (the PNG info picture is set), the hires fix switched on by hand
            page.goto(app_url)
            page.locator("#txt2img-hires").get_by_text("Hires. fix").first.click()
            checkbox.check()
        page.get_by_role("tab", name="PNG info").click()
        page.locator("#pnginfo-image input[type=file]").set_input_files(str(path))
        page.wait_for_function(f"() => document.querySelector('#pnginfo-raw textarea').value.includes('Seed: {seed}')")
        page.locator("#pnginfo-send-txt2img").click()
        page.wait_for_function(f"() => document.querySelector('#txt2img-seed input').value === '{seed}'")
        assert checkbox.is_checked() is on
        if on:
            assert page.locator("#txt2img-hr-scale input[type=number]").input_value() == "1.5"
            assert page.locator("#txt2img-hr-upscaler input").input_value() == "Latent"
    page.close()
