"""``--backend auto`` (the default): a model's first start converts it to OpenVINO in the background while torch
serves, the first request after that measures both backends and keeps the faster, and a second start reads the
conversion and the measurement at once, converting and measuring nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.generation.engine import Engine
from backend.models import openvino_cache, openvino_choice, openvino_unet, tiny
from backend.models.devices import DevicePlan
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings
from tests.conftest import TINY

pytest.importorskip("openvino")

WAIT_S = 300  # the tiny model converts in seconds; a loaded machine may take longer
MEAN_PIXEL_TOLERANCE = 1.0  # as tests/test_openvino.py: OpenVINO f32 against torch float32


def engine(cache: Path, backend: str, out: Path) -> Engine:
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache, save_outputs=False, backend=backend))


def request(**fields) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", model=TINY, seed=5, steps=3, width=64, height=64, sampler="Euler")
    return Txt2ImgRequest(**{**base, **fields})


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float32) for image in result.images])


def unet_runs(monkeypatch) -> list[str]:
    """The names of the converted models run ("UNet", "VAE decoder"), one per call."""
    calls: list[str] = []
    original = openvino_unet.Converted.run

    def spy(self, *inputs, dtype, stop=None):
        calls.append(self.name)
        return original(self, *inputs, dtype=dtype, stop=stop)

    monkeypatch.setattr(openvino_unet.Converted, "run", spy)
    return calls


def twice_as_fast(run_torch, run_openvino, shape):
    """``time_both`` with a fixed result (OpenVINO 2× torch), so the choice does not hang on this machine's load."""
    outputs = (run_torch(), run_openvino())
    return openvino_choice.Measurement(2.0, 1.0, shape, "today"), outputs


@pytest.fixture
def cache(tmp_path) -> Path:
    tiny.ensure(tmp_path / "cache" / "tiny")
    return tmp_path / "cache"


def test_auto_converts_in_the_background_measures_then_a_second_start_reuses_both(cache, tmp_path, monkeypatch):
    gate, converted = threading.Event(), []
    original = openvino_unet.convert

    def gated(*args, **kwargs):  # the real conversion, held until the first request ran
        assert gate.wait(WAIT_S)
        converted.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(openvino_unet, "convert", gated)
    monkeypatch.setattr(openvino_choice, "time_both", twice_as_fast)
    calls = unet_runs(monkeypatch)
    first = engine(cache, "auto", tmp_path / "first")
    unet = first.cache.model(TINY).base.unet
    assert first.cache.model(TINY).memory_options[-1] == openvino_unet.CONVERTING
    job = openvino_unet.converting(unet)
    assert job is not None and not job.done.is_set()

    while_converting = first.run(request())  # torch serves meanwhile
    assert openvino_unet.CONVERTING in while_converting.warnings and not calls
    reference = engine(cache, "torch", tmp_path / "torch").run(request())
    assert np.array_equal(pixels(while_converting), pixels(reference))

    gate.set()
    assert job.done.wait(WAIT_S) and not job.error, job.error
    assert converted == ["openvino-convert"] * 2  # the UNet and the VAE decoder, on the worker thread
    measured = first.run(request())  # the conversion is put on the model and measured at this request's shape
    [note] = [line for line in measured.warnings if line.startswith("auto: ")]
    assert note.startswith("auto: OpenVINO 2.0× faster than torch f32 here") and "batch 2 at 32×32 latents" in note
    assert calls.count("UNet") == 3 and calls.count("VAE decoder") == 1  # the measured step's output is OpenVINO's
    assert np.abs(pixels(measured) - pixels(reference)).mean() < MEAN_PIXEL_TOLERANCE
    assert not first.run(request()).warnings  # said once

    # A second start: the cached conversion and the stored measurement, at once; nothing converted or measured.
    monkeypatch.setattr(openvino_unet, "convert", lambda *args: pytest.fail("converted again"))
    monkeypatch.setattr(openvino_choice, "time_both", lambda *args: pytest.fail("measured again"))
    second = engine(cache, "auto", tmp_path / "second")
    options = second.cache.model(TINY).memory_options
    assert "OpenVINO UNet (f32, cached)" in options and "OpenVINO VAE decoder (f32, cached)" in options
    assert openvino_unet.converting(second.cache.model(TINY).base.unet) is None
    calls.clear()
    again = second.run(request())
    assert calls.count("UNet") == 3 and calls.count("VAE decoder") == 1
    assert any(line.startswith("auto: OpenVINO 2.0× faster") for line in again.warnings)
    assert np.abs(pixels(again) - pixels(measured)).mean() < MEAN_PIXEL_TOLERANCE


def test_a_failed_conversion_leaves_torch_with_the_reason_and_is_not_retried(cache, tmp_path, monkeypatch):
    tries = []

    def broken(*args, **kwargs):
        tries.append(1)
        raise RuntimeError("no kernel for this op\n(a long trace)")

    monkeypatch.setattr(openvino_unet, "convert", broken)
    monkeypatch.setattr(openvino_unet, "_FAILED", {})
    first = engine(cache, "auto", tmp_path / "first")
    job = openvino_unet.converting(first.cache.model(TINY).base.unet)
    assert job.done.wait(WAIT_S) and job.error == "RuntimeError: no kernel for this op"
    result = first.run(request())
    reason = "auto: torch for this model: its OpenVINO conversion failed (RuntimeError: no kernel for this op)"
    assert reason in result.warnings
    assert not first.run(request()).warnings  # said once
    second = engine(cache, "auto", tmp_path / "second")  # the same weights again: torch at once, the reason said
    assert second.cache.model(TINY).memory_options[-1] == reason
    assert openvino_unet.converting(second.cache.model(TINY).base.unet) is None
    assert reason in second.run(request()).warnings and tries == [1]


def test_the_worker_runs_one_conversion_at_a_time():
    worker, running, overlaps = openvino_cache.Worker(), [], []

    def work(index: int):
        def run() -> int:
            running.append(index)
            overlaps.append(len(running))
            time.sleep(0.05)
            running.remove(index)
            return index

        return run

    jobs = [worker.submit(work(index)) for index in range(3)]
    assert all(job.done.wait(10) for job in jobs)
    assert [job.result for job in jobs] == [0, 1, 2] and overlaps == [1, 1, 1]


def test_auto_on_a_gpu_or_with_torch_chosen_converts_nothing(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(openvino_unet, "convert", lambda *args: pytest.fail("converted"))
    plain = engine(cache, "torch", tmp_path)
    pipe = plain.cache.model(TINY).base
    assert openvino_unet.converting(pipe.unet) is None
    assert not plain.run(request()).warnings
    on_gpu = Settings(cache_dir=cache, backend="auto")
    assert openvino_unet.attach(pipe, on_gpu, DevicePlan("cuda", torch.float16)) == []
    assert openvino_unet.converting(pipe.unet) is None
