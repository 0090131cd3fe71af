"""``--backend openvino``: what the converted UNet can't take runs on torch and the page hears why; Stop, previews.

LoRA (not fused: the converted weights stay the base model's) and ControlNet residuals run the torch UNet for the
run, with a one-line reason in the run's warnings (shown on the page); their pictures are the torch path's. A model's
9-channel inpainting UNet is converted too and runs on OpenVINO. Stop is checked while an OpenVINO inference runs,
and previews come every step.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, get_peft_model_state_dict
from PIL import Image, ImageDraw

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.models import openvino_unet, tiny
from backend.models.devices import DevicePlan
from backend.models.registry import ModelRegistry
from backend.schema.requests import ControlNetRequest, ControlUnit, InpaintRequest, Txt2ImgRequest
from backend.settings import Settings
from tests.conftest import TINY, write_registry

pytest.importorskip("openvino")

MEAN_PIXEL_TOLERANCE = 1.0  # as tests/test_openvino.py: the converted VAE decoder's summation order only


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ov-fallbacks")
    tiny.ensure(root / "cache" / "tiny")
    tiny.ensure(root / "cache" / "tiny-inpaint", inpaint=True)
    (root / "loras").mkdir()
    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_pretrained(root / "cache" / "tiny", subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False))
    with torch.no_grad():  # a strong LoRA: its effect must stand far above OpenVINO's rounding
        for name, param in unet.named_parameters():
            param.mul_(8.0 if "lora_B" in name else 1.0)
    StableDiffusionPipeline.save_lora_weights(
        root / "loras", unet_lora_layers=get_peft_model_state_dict(unet), weight_name="style.safetensors"
    )
    # Both entries have the tiny 9-channel inpainting UNet as their inpaint variant; only "Tiny+inpaint" inpaints.
    models = write_registry(root / "models.json", [TINY, "Tiny+inpaint"], inpaint="builtin:tiny-inpaint")
    return {"cache": root / "cache", "loras": root / "loras", "models": models, "out": root / "out"}


def make(folders: dict[str, Path], backend: str) -> Engine:
    settings = Settings(
        offline=True,
        output_dir=folders["out"],
        cache_dir=folders["cache"],
        save_outputs=False,
        backend=backend,
        lora_dirs=str(folders["loras"]),
        default_model=TINY,
        models_file=folders["models"],
    )
    return Engine(settings, ModelRegistry.load(folders["models"]))


@pytest.fixture(scope="module")
def engines(folders) -> dict[str, Engine]:
    return {backend: make(folders, backend) for backend in ("openvino", "torch")}


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float32) for image in result.images])


def request(**fields) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", model=TINY, seed=5, steps=3, width=64, height=64, sampler="Euler")
    return Txt2ImgRequest(**{**base, **fields})


def unet_calls(monkeypatch) -> list[bool]:
    """One entry per converted UNet call: whether it was given the run's Stop check."""
    calls: list[bool] = []
    original = openvino_unet.Converted.run

    def spy(self, *inputs, dtype, stop=None):
        if self.name == "UNet":
            calls.append(stop is not None)
        return original(self, *inputs, dtype=dtype, stop=stop)

    monkeypatch.setattr(openvino_unet.Converted, "run", spy)
    return calls


def both(engines, made) -> tuple:
    return engines["openvino"].run(made), engines["torch"].run(made)


def test_a_lora_runs_the_torch_unet_for_its_run_and_says_so(engines, monkeypatch):
    calls = unet_calls(monkeypatch)
    ov, reference = both(engines, request(prompt="a red circle <lora:style:1>"))
    assert not calls  # the converted UNet (base weights) never ran
    assert any("an active LoRA" in line and "ran on torch in this run" in line for line in ov.warnings), ov.warnings
    assert np.abs(pixels(ov) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE
    plain = engines["openvino"].run(request())  # the LoRA is switched off: OpenVINO again, and nothing to say
    assert calls and not plain.warnings
    assert np.abs(pixels(plain) - pixels(ov)).mean() > 5 * MEAN_PIXEL_TOLERANCE  # the LoRA did change the picture


@pytest.mark.slow  # the LoRA test covers the fallback path in the default run
def test_controlnet_residuals_run_the_torch_unet_and_say_so(engines, monkeypatch):
    square = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(square).rectangle([16, 16, 47, 47], fill="white")
    made = ControlNetRequest(
        prompt="a red circle",
        model=TINY,
        seed=5,
        steps=3,
        sampler="Euler",
        units=(ControlUnit(image=square, preprocessor="none"),),
    )
    calls = unet_calls(monkeypatch)
    ov, reference = both(engines, made)
    assert not calls
    assert any("ControlNet residuals" in line for line in ov.warnings), ov.warnings
    assert np.abs(pixels(ov) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE


def test_a_nine_channel_inpainting_unet_runs_on_openvino_close_to_torch(engines, monkeypatch):
    image = Image.new("RGB", (64, 64), "navy")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse([16, 16, 47, 47], fill=255)
    made = InpaintRequest(
        prompt="a red circle", model="Tiny+inpaint", image=image, mask=mask, seed=7, steps=3, sampler="Euler"
    )
    engines["openvino"].cache.pipeline("Tiny+inpaint", "inpaint")  # loads and converts the variant
    calls = unet_calls(monkeypatch)
    ov, reference = both(engines, made)
    unet = engines["openvino"].cache.pipeline("Tiny+inpaint", "inpaint").unet
    assert unet.config.in_channels == 9 and hasattr(unet.forward, "converted")
    assert len(calls) == 2 and not ov.warnings  # every step (2 of 3 at strength 0.75) on OpenVINO, nothing said
    assert np.abs(pixels(ov) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE
    assert np.abs(pixels(ov) - pixels(engines["openvino"].run(made.replace(seed=8)))).mean() > 5 * MEAN_PIXEL_TOLERANCE


def test_stop_and_previews_on_the_openvino_path(engines, monkeypatch):
    engine = engines["openvino"]
    calls = unet_calls(monkeypatch)
    events = []
    engine.run(request(steps=3), on_step=events.append, cancel=threading.Event())
    assert calls and all(calls)  # each converted call polls the run's Stop
    assert [e.step for e in events] == [1, 2, 3] and all(e.preview is not None for e in events)
    cancel = threading.Event()

    def on_step(event):
        if event.step == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.run(request(steps=5), on_step=on_step, cancel=cancel)
    assert 3 + 1 <= len(calls) <= 3 + 2  # the first step, then at most the call whose Stop check ended the run


@pytest.mark.slow  # the Stop-and-previews test covers the poll in the default run
def test_a_stop_cancels_a_running_openvino_inference(engines):
    converted = engines["openvino"].cache.model(TINY).base.unet.forward.converted
    checks = []

    def stop() -> None:
        checks.append(1)
        if len(checks) == 2:  # the first poll after the inference started
            raise Cancelled("generation stopped")

    inputs = (torch.randn(2, 4, 64, 64), torch.full((2,), 500.0), torch.randn(2, 77, 32))  # a call of many POLL_MS
    with pytest.raises(Cancelled):
        converted.run(*inputs, dtype=torch.float32, stop=stop)
    assert len(checks) == 2  # Stop came while the inference ran, and ended it
    assert converted.run(*inputs, dtype=torch.float32).shape == inputs[0].shape  # the model still works after


@pytest.mark.slow  # converts the 9-channel UNet apart from the engine (the engine-level test above covers it)
def test_a_nine_channel_inpainting_unet_converts_with_attach_variant(folders):
    unet = UNet2DConditionModel.from_pretrained(folders["cache"] / "tiny-inpaint", subfolder="unet").eval()
    settings = Settings(cache_dir=folders["cache"], backend="openvino")
    inputs = (torch.randn(2, 9, 32, 32), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 32))
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert openvino_unet.attach_variant(unet, settings, DevicePlan("cpu", torch.float32)) is unet
        assert hasattr(unet.forward, "converted")
        out = unet(*inputs, return_dict=False)[0]
    assert (out - reference).abs().mean() < 1e-3 * reference.abs().mean()
