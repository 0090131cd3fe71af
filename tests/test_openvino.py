"""``--backend openvino``: the UNet and VAE decoder run converted OpenVINO models on the CPU.

The pictures stay the torch path's (to a small tolerance), a second start reads the disk cache instead of
converting, sizes and batches don't convert again, and what the converted graph can't take runs on torch with a
logged reason.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from backend.generation.engine import Engine
from backend.models import openvino_cache, openvino_choice, openvino_unet, tiny
from backend.models.devices import DevicePlan
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings
from tests.conftest import TINY
from training.data import classify_picture

pytest.importorskip("openvino")

DEMO = "Demo shapes (offline)"
# Mean absolute pixel difference (0-255) allowed between OpenVINO f32 and torch float32 on the tiny model; measured
# about 0.0-0.1 (docs/performance.md, "OpenVINO"): the same graph, only the kernels' summation order differs.
MEAN_PIXEL_TOLERANCE = 1.0


class Conversions:
    """Counts ``openvino_unet.convert`` calls (a cache hit makes none)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openvino-cache")
    tiny.ensure(path / "tiny")
    return path


@pytest.fixture(scope="module")
def conversions() -> Conversions:
    counter = Conversions()
    original = openvino_unet.convert

    def counting(*args, **kwargs):
        counter.count += 1
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino_unet, "convert", counting)
        yield counter


def engine(cache: Path, backend: str, out: Path) -> Engine:
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache, save_outputs=False, backend=backend))


@pytest.fixture(scope="module")
def ov_engine(ov_cache, conversions, tmp_path_factory) -> Engine:
    made = engine(ov_cache, "openvino", tmp_path_factory.mktemp("ov"))
    made.cache.model(TINY)  # loads and converts
    return made


@pytest.fixture(scope="module")
def torch_engine(ov_cache, tmp_path_factory) -> Engine:
    return engine(ov_cache, "torch", tmp_path_factory.mktemp("torch"))


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float32) for image in result.images])


def request(**fields) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", model=TINY, seed=5, steps=4, width=64, height=64)
    base.update(sampler="Euler a", schedule="Automatic")
    return Txt2ImgRequest(**{**base, **fields})


def test_openvino_pictures_match_torch_and_repeat_with_the_seed(ov_engine, torch_engine, conversions):
    assert conversions.count == 2  # the UNet and the VAE decoder, once
    notes = ov_engine.cache.model(TINY).memory_options
    assert any(note.startswith("OpenVINO UNet (f32") for note in notes), notes
    assert "Backend: UNet and VAE decoder on OpenVINO (f32)" in ov_engine.precision
    assert "OpenVINO" not in torch_engine.precision
    ov, again, reference = (pixels(e.run(request())) for e in (ov_engine, ov_engine, torch_engine))
    assert np.array_equal(ov, again)  # same seed, same path: the same pixels
    assert np.abs(ov - reference).mean() < MEAN_PIXEL_TOLERANCE
    other = pixels(ov_engine.run(request(seed=6)))
    assert np.abs(other - ov).mean() > 5 * MEAN_PIXEL_TOLERANCE  # the seed still matters


def test_sizes_and_batches_run_openvino_without_converting(ov_engine, conversions, monkeypatch):
    calls: list[tuple[int, ...]] = []
    original = openvino_unet.Converted.run

    def spy(self, *inputs, dtype, stop=None):
        calls.append(tuple(inputs[0].shape))
        return original(self, *inputs, dtype=dtype, stop=stop)

    monkeypatch.setattr(openvino_unet.Converted, "run", spy)
    before = conversions.count
    ov = ov_engine.run(request(width=96, height=64, batch_size=2))
    assert conversions.count == before
    assert (4, 4, 32, 48) in calls  # CFG doubles the batch of 2: the UNet ran on OpenVINO at the new size
    assert (2, 4, 32, 48) in calls  # the VAE decoder too (the tiny VAE scales by 2)
    assert [image.size for image in ov.images] == [(96, 64)] * 2


def test_a_second_start_reads_the_disk_cache(ov_engine, ov_cache, conversions, tmp_path):
    before = conversions.count
    second = engine(ov_cache, "openvino", tmp_path)
    notes = second.cache.model(TINY).memory_options
    assert conversions.count == before  # nothing converted again
    assert "OpenVINO UNet (f32, cached)" in notes and "OpenVINO VAE decoder (f32, cached)" in notes
    assert np.array_equal(pixels(second.run(request())), pixels(ov_engine.run(request())))


def test_deep_cache_falls_back_to_torch_with_the_reason(ov_engine, torch_engine, caplog):
    with caplog.at_level(logging.INFO, logger="backend.models"):  # openvino_forward logs the fallback
        ov = ov_engine.run(request(deep_cache=2))
    assert "DeepCache" in caplog.text and "runs on torch" in caplog.text
    page = ov.warnings  # the page hears it too
    assert any("DeepCache" in line and "ran on torch in this run" in line for line in page), page
    assert not any("OpenVINO" in line for line in ov_engine.run(request()).warnings)  # this run only
    reference = torch_engine.run(request(deep_cache=2))
    assert np.abs(pixels(ov) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE


def test_unsupported_calls_and_devices_are_named():
    unet = torch.nn.Linear(1, 1)
    assert "ControlNet" in openvino_unet.call_reason(unet, {"mid_block_additional_residual": torch.zeros(1)})
    assert "added_cond_kwargs" in openvino_unet.call_reason(unet, {"added_cond_kwargs": {"text_embeds": 1}})
    assert openvino_unet.call_reason(unet, {"cross_attention_kwargs": None}) == ""
    use, why = openvino_unet.choose(Settings(backend="openvino"), DevicePlan("cuda", torch.float16))
    assert not use and "CPU only" in why
    cpu = DevicePlan("cpu", torch.float32)
    use, why = openvino_unet.choose(Settings(backend="auto"), cpu)
    assert use and why.startswith("auto: OpenVINO for a model where it was measured faster")  # decided per model
    assert openvino_unet.choose(Settings(backend="torch"), cpu) == (False, "")
    use, why = openvino_unet.choose(Settings(backend="auto", compile_unet=True), cpu)
    assert not use and "--compile-unet" in why
    with pytest.raises(ValueError, match="SDSTUDIO_BACKEND"):
        openvino_unet.choose(Settings(backend="onnx"), DevicePlan("cpu", torch.float32))


def test_the_cache_keeps_the_newest_entries(tmp_path):
    for index, name in enumerate(["a", "b", "c", "d.partial"]):
        entry = tmp_path / name
        entry.mkdir()
        (entry / "model.xml").write_text("<net/>")
        stamp = 1_000_000 + index
        os.utime(entry, (stamp, stamp))
    gone = openvino_cache.DiskCache(tmp_path, keep=2).prune()
    assert sorted(p.name for p in gone) == ["a", "d.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_weights_hash_follows_the_weights():
    layer = torch.nn.Linear(3, 3)
    first = openvino_cache.weights_hash(layer)
    assert openvino_cache.weights_hash(layer) == first
    with torch.no_grad():
        layer.weight[0, 0] += 1e-3
    assert openvino_cache.weights_hash(layer) != first


@pytest.mark.slow
def test_demo_model_on_openvino_draws_the_prompted_colour_and_shape(tmp_path):
    settings = Settings(
        offline=True, output_dir=tmp_path, cache_dir=tmp_path / "cache", save_outputs=False, backend="openvino"
    )
    ov = Engine(settings)
    hits = 0
    prompts = [("red", "circle", "blue"), ("yellow", "square", "black"), ("green", "triangle", "white")]
    for colour, shape, background in prompts:
        prompt = f"a {colour} {shape} on a {background} background"
        result = ov.run(
            Txt2ImgRequest(
                prompt=prompt,
                model=DEMO,
                seed=11,
                steps=16,
                guidance_scale=6.0,
                width=64,
                height=64,
                sampler="DPM++ 2M",
                schedule="Automatic",
            )
        )
        got = classify_picture(result.images[0])
        hits += (got["colour"], got["shape"]) == (colour, shape)
    assert any("OpenVINO UNet" in note for note in ov.cache.model(DEMO).memory_options)
    assert hits >= 2, hits


@pytest.mark.slow  # ~15 s on the loaded 2-core machine; the batch change is the same dynamic shape as above
def test_skip_cfg_changes_the_batch_mid_run_without_converting(ov_engine, torch_engine, conversions):
    before = conversions.count
    ov = ov_engine.run(request(skip_cfg_after=0.5))  # the UNet batch drops from 2 to 1 half-way
    assert conversions.count == before
    reference = torch_engine.run(request(skip_cfg_after=0.5))
    assert np.abs(pixels(ov) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE


def test_an_active_lora_runs_on_torch(ov_cache):
    unet = UNet2DConditionModel.from_pretrained(ov_cache / "tiny", subfolder="unet")
    assert openvino_unet.call_reason(unet, {}) == ""
    unet.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k"]), adapter_name="style")
    assert "LoRA" in openvino_unet.call_reason(unet, {})
    unet.disable_adapters()
    assert openvino_unet.call_reason(unet, {}) == ""


def unet_runs(monkeypatch) -> list[int]:
    """Counts the converted UNet's calls (the VAE decoder's are not counted)."""
    calls: list[int] = []
    original = openvino_unet.Converted.run

    def spy(self, *inputs, dtype, stop=None):
        calls.extend([1] if self.name == "UNet" else [])
        return original(self, *inputs, dtype=dtype, stop=stop)

    monkeypatch.setattr(openvino_unet.Converted, "run", spy)
    return calls


def test_auto_measures_a_converted_model_once_and_keeps_the_faster(
    ov_engine, ov_cache, torch_engine, conversions, tmp_path, monkeypatch
):
    before = conversions.count
    calibration = ov_cache / "openvino" / openvino_choice.CALIBRATION_FILE
    calibration.unlink(missing_ok=True)
    first = engine(ov_cache, "auto", tmp_path / "first")  # the openvino start (ov_engine) converted the tiny model
    result = first.run(request())
    assert conversions.count == before  # auto found the conversion: nothing converted
    stored = json.loads(calibration.read_text())
    [(key, measured)] = stored.items()
    assert key.startswith(openvino_choice.cpu_name()) and key.endswith("| f32")
    assert measured["shape"] == "batch 2 at 32×32 latents"  # the request's shape: CFG's batch of 2 at 64²
    faster = measured["torch_s"] / measured["openvino_s"] >= openvino_choice.MARGIN
    [note] = [line for line in result.warnings if line.startswith("auto: ")]
    assert note.startswith("auto: OpenVINO") if faster else note.startswith("auto: torch: OpenVINO measured")
    same = ov_engine if faster else torch_engine  # the chosen backend's pixels, the first step included
    assert np.abs(pixels(result) - pixels(same.run(request()))).mean() < 1e-6

    # A second start reads the measurement: no conversion, no measurement, the same choice, said once on the page.
    monkeypatch.setattr(openvino_choice, "time_both", lambda *args: pytest.fail("measured again"))
    calls = unet_runs(monkeypatch)
    second = engine(ov_cache, "auto", tmp_path / "second")
    again = second.run(request())
    assert conversions.count == before
    assert bool(calls) == faster
    assert any(line.startswith(note.split(" (")[0]) for line in again.warnings)
    assert not any(line.startswith("auto: ") for line in second.run(request()).warnings)


def test_auto_keeps_torch_where_openvino_was_measured_slower(ov_engine, ov_cache, torch_engine, tmp_path, monkeypatch):
    unet = ov_engine.cache.model(TINY).base.unet
    key = openvino_cache.entry_key("unet", unet)
    slower = openvino_choice.Measurement(torch_s=1.0, openvino_s=2.0, shape="batch 2 at 32×32 latents", date="today")
    openvino_choice.Calibrations(ov_cache / "openvino").put(openvino_choice.Calibrations.key(key, "f32"), slower)
    calls = unet_runs(monkeypatch)
    auto = engine(ov_cache, "auto", tmp_path)
    result = auto.run(request())
    assert not calls  # the converted UNet never ran
    assert any(line.startswith("auto: torch: OpenVINO measured 0.50× torch f32 here") for line in result.warnings)
    assert np.array_equal(pixels(result), pixels(torch_engine.run(request())))
