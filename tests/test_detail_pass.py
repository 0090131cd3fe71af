"""The detail pass (ADetailer): detectors found in their folder, boxes repainted, infotext and the A1111 API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from api.convert import txt2img_request
from api.models import Txt2ImgBody
from backend.generation import detail
from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.models import detectors
from backend.models.detectors import Detector, Detectors, load_detector, save_detector
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, Txt2ImgRequest
from backend.settings import Settings
from tests.conftest import TINY, pixels
from training.data import classify_picture
from training.train_detector import NETWORK as TINY_YOLO  # the demo detector's layout: built in a second on the CPU

BOX = (40, 40, 72, 72)


class FixedDetector(Detector):
    """Finds the same box in every picture (what the pass does with boxes is under test, not the network)."""

    def __init__(self, boxes):
        super().__init__("fixed.safetensors", torch.nn.Identity())
        self.boxes = boxes
        self.asked: list[float] = []

    def detect(self, image, confidence):
        self.asked.append(confidence)
        return list(self.boxes)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("adetailer")
    (path / "fixed.safetensors").write_bytes(b"stands for the injected detector")
    (path / "broken.safetensors").write_bytes(b"not a safetensors file")
    return path


@pytest.fixture(scope="module")
def engine(folder, cache_dir, tmp_path_factory) -> Engine:
    settings = Settings(offline=True, output_dir=tmp_path_factory.mktemp("out"), save_outputs=False,
                        cache_dir=cache_dir, adetailer_dirs=str(folder))
    return Engine(settings)


@pytest.fixture
def fixed(engine, monkeypatch) -> FixedDetector:
    found = FixedDetector([BOX])
    real = engine.detectors.get
    monkeypatch.setattr(engine.detectors, "get", lambda name: found if name == "fixed.safetensors" else real(name))
    return found


def request(**changes) -> Txt2ImgRequest:
    base = Txt2ImgRequest(prompt="a red circle on a blue background", seed=99, steps=4, guidance_scale=5.0,
                          width=128, height=128, sampler="Euler", schedule="Automatic", model=TINY, save=False)
    return base.replace(**changes)


COMMON = ("prompt", "seed", "steps", "guidance_scale", "width", "height", "sampler", "schedule", "model", "save")
DETAIL = dict(ad_model="fixed.safetensors", ad_prompt="a green square", ad_denoising_strength=0.9, ad_mask_blur=2,
              ad_inpaint_only_masked_padding=8, ad_confidence=0.45)


def test_only_pixels_inside_the_padded_box_change(engine, fixed):
    plain = pixels(engine.run(request()).images[0])
    detailed = pixels(engine.run(request(**DETAIL)).images[0])
    assert fixed.asked == [0.45]  # the request's confidence reached the detector
    changed = np.abs(plain - detailed).max(axis=-1) > 0
    outside = np.ones_like(changed)
    pad = DETAIL["ad_inpaint_only_masked_padding"]
    outside[BOX[1] - pad : BOX[3] + pad, BOX[0] - pad : BOX[2] + pad] = False
    assert not changed[outside].any()
    assert changed[BOX[1] : BOX[3], BOX[0] : BOX[2]].mean() > 0.5


def test_img2img_runs_the_pass_too(engine, fixed):
    start = Image.new("RGB", (128, 128), (30, 30, 200))
    base = Img2ImgRequest(image=start, strength=0.6, **{k: getattr(request(), k) for k in COMMON})
    plain = pixels(engine.run(base).images[0])
    detailed = pixels(engine.run(base.replace(**DETAIL)).images[0])
    changed = np.abs(plain - detailed).max(axis=-1) > 0
    assert changed[BOX[1] : BOX[3], BOX[0] : BOX[2]].mean() > 0.5 and not changed[:24].any()


@pytest.mark.slow  # four runs; the default run keeps the pixel, infotext and API checks
def test_same_seed_same_pixels_and_the_fields_change_the_result(engine, fixed):
    first = pixels(engine.run(request(**DETAIL)).images[0])
    assert np.array_equal(first, pixels(engine.run(request(**DETAIL)).images[0]))
    weaker = pixels(engine.run(request(**{**DETAIL, "ad_denoising_strength": 0.3})).images[0])
    other_prompt = pixels(engine.run(request(**{**DETAIL, "ad_prompt": "a yellow star"})).images[0])
    assert not np.array_equal(first, weaker)
    assert not np.array_equal(first, other_prompt)


def test_infotext_round_trips(engine, fixed):
    result = engine.run(request(**DETAIL, ad_negative_prompt="blurry, dark"))
    info = parse_infotext(result.infotext)
    assert info.params["ADetailer model"] == "fixed.safetensors"
    assert info.params["ADetailer prompt"] == "a green square"
    assert info.params["ADetailer negative prompt"] == "blurry, dark"
    assert info.params["ADetailer inpaint padding"] == "8"
    assert info.params["ADetailer version"] == detail.ADETAILER_VERSION
    back = info.to_request(Txt2ImgRequest)
    for name, value in {**DETAIL, "ad_negative_prompt": "blurry, dark"}.items():
        assert getattr(back, name) == value, name
    plain = parse_infotext(engine.run(request()).infotext)
    assert not any(key.startswith("ADetailer") for key in plain.params)
    assert plain.to_request(Txt2ImgRequest).ad_model == "None"


def test_a1111_alwayson_scripts_reaches_the_pass(engine, fixed):
    body = Txt2ImgBody(
        prompt="a red circle on a blue background", seed=99, steps=4, cfg_scale=5.0, width=128, height=128,
        sampler_name="Euler",
        alwayson_scripts={"ADetailer": {"args": [True, False, {
            "ad_model": "fixed.safetensors", "ad_prompt": "a green square", "ad_denoising_strength": 0.9,
            "ad_confidence": 0.45, "ad_mask_blur": 2, "ad_inpaint_only_masked_padding": 8,
        }, {"ad_model": "None"}]}},
    )
    converted = txt2img_request(body, TINY, None)
    for name, value in DETAIL.items():
        assert getattr(converted, name) == value, name
    via_api = pixels(engine.run(converted.replace(save=False)).images[0])
    assert np.array_equal(via_api, pixels(engine.run(request(**DETAIL)).images[0]))
    off = Txt2ImgBody(prompt="x", alwayson_scripts={"ADetailer": {"args": [{"ad_model": "None"}]}})
    assert txt2img_request(off, TINY, None).ad_model == "None"
    with pytest.raises(ValidationError) as err:
        txt2img_request(Txt2ImgBody(prompt="x", alwayson_scripts={"ADetailer": {"args": "face"}}), TINY, None)
    assert err.value.field.startswith("alwayson_scripts.ADetailer")


def test_missing_and_broken_detectors_are_refused_naming_the_folder(engine):
    with pytest.raises(ValidationError) as err:
        engine.run(request(ad_model="face_yolov8n.pt"))
    assert err.value.field == "ad_model" and "models/adetailer" in str(err.value)
    with pytest.raises(ValidationError) as err:
        engine.run(request(ad_model="broken.safetensors"))
    assert err.value.field == "ad_model" and "broken.safetensors" in str(err.value)


def tiny_yolo():
    DetectionModel = detectors._ultralytics().tasks.DetectionModel  # noqa: N806 - imported as the app does

    torch.manual_seed(0)
    model = DetectionModel(TINY_YOLO, nc=1, verbose=False).eval()
    model.names = {0: "shape"}
    return model


def test_real_ultralytics_files_load(tmp_path):
    """A safetensors detector and ultralytics' own .pt (a pickle: only with the owner's opt-in) find the same boxes."""
    model = tiny_yolo()
    save_detector(model, tmp_path / "tiny.safetensors")
    torch.save({"model": model, "train_args": {}}, tmp_path / "tiny.pt")
    picture = Image.new("RGB", (640, 640), (114, 114, 114))  # letterboxed as it is: the network sees exactly this
    with torch.no_grad():  # just under the best score the random network gives it, so at least one box passes
        best = float(model(torch.full((1, 3, 640, 640), 114 / 255))[0][:, 4:].max())
    safe = load_detector(tmp_path / "tiny.safetensors", allow_pickle=False)
    assert safe.classes == {0: "shape"}
    with pytest.raises(ValidationError) as err:
        load_detector(tmp_path / "tiny.pt", allow_pickle=False)
    assert err.value.field == "ad_model" and "SDSTUDIO_ALLOW_PICKLE" in str(err.value)
    pickled = load_detector(tmp_path / "tiny.pt", allow_pickle=True)
    boxes = safe.detect(picture, best * 0.999)
    assert boxes and boxes == pickled.detect(picture, best * 0.999)
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 640 for x0, y0, x1, y1 in boxes)
    assert safe.detect(picture, min(1.0, best * 1.01)) == []
    settings = Settings(adetailer_dirs=str(tmp_path))
    assert "tiny.safetensors" in Detectors(settings).names() and "tiny.pt" not in Detectors(settings).names()
    assert "tiny.pt" in Detectors(Settings(adetailer_dirs=str(tmp_path), allow_pickle=True)).names()


DEMO = "Demo shapes (offline)"
DEMO_DETECTOR = "demo-shapes.safetensors"  # trained by training/train_detector.py on the demo model's pictures


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("demo"), save_outputs=False))


def test_demo_detector_finds_the_shape_and_the_pass_recolours_it(demo):
    """On the demo model: a large red circle on black, repainted as "a large green circle", comes out green on
    black; the demo detector's box is where the classifier sees the circle."""
    base = Txt2ImgRequest(prompt="a large red circle on a black background", steps=20, guidance_scale=6.0,
                          width=64, height=64, sampler="DPM++ 2M", schedule="Automatic", model=DEMO, save=False)
    detector = demo.detectors.get(DEMO_DETECTOR)
    for seed in (3, 11):
        plain = demo.run(base.replace(seed=seed)).images[0]
        seen = classify_picture(plain)
        assert (seen["colour"], seen["background"], seen["shape"]) == ("red", "black", "circle")
        (x0, y0, x1, y1), *_ = detector.detect(plain, 0.3)
        assert abs((x0 + x1) / 2 - seen["cx"]) < 6 and abs((y0 + y1) / 2 - seen["cy"]) < 6
        assert abs(max(x1 - x0, y1 - y0) - seen["size"]) < 10
        detailed = demo.run(base.replace(seed=seed, ad_model=DEMO_DETECTOR, ad_prompt="a large green circle",
                                         ad_denoising_strength=0.9)).images[0]
        seen = classify_picture(detailed)
        assert (seen["colour"], seen["background"]) == ("green", "black"), seed


def test_every_tab_has_the_adetailer_accordion_listing_the_folder(engine):
    import gradio as gr

    from ui import tab_img2img, tab_txt2img
    from ui.presets_ui import own_preset_storage
    from ui.session import CancelRegistry
    from ui.studio import Studio

    for module in (tab_txt2img, tab_img2img):
        with gr.Blocks() as page:
            studio = Studio(engine=engine, cancels=CancelRegistry(), preset_storage=own_preset_storage())
            handle = module.build_tab(studio)
        menu = handle.controls["ad_model"]
        listed = [value for _, value in menu.choices]
        assert listed[0] == "None" and {"broken.safetensors", "fixed.safetensors"} <= set(listed)
        assert menu.value == "None"
        accordions = [b for b in page.blocks.values() if isinstance(b, gr.Accordion) and b.label == "ADetailer"]
        assert len(accordions) == 1
        assert handle.controls["ad_denoising_strength"].maximum == 1.0


def test_loading_a_detector_leaves_pil_and_torch_as_they_were(tmp_path):
    """ultralytics patches Image.open (a non-picture then tries to pip-install pi-heif) and torch.save on import."""
    import PIL.Image
    import torch as torch_module

    before = PIL.Image.open, torch_module.save
    detectors._ultralytics()
    assert (PIL.Image.open, torch_module.save) == before
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(notes)
