"""Shared fixtures. Every test runs offline: no hub, no network."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Tests compare pixels with plain diffusers in float32: the CPU default stays float32 whatever this CPU computes
# natively (bf16 is tested on its own: test_settings_models.py, test_semantic.py). Apps the tests launch read this.
os.environ.setdefault("SDSTUDIO_DTYPE", "float32")
# The suite runs torch: auto would convert each test model to OpenVINO in the background and then run it there. The
# OpenVINO tests (test_openvino*.py) set auto/openvino themselves.
os.environ.setdefault("SDSTUDIO_BACKEND", "torch")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from backend.generation.engine import Engine  # noqa: E402
from backend.models import devices, tiny  # noqa: E402
from backend.models.registry import ModelRegistry  # noqa: E402
from backend.schema.requests import Txt2ImgRequest  # noqa: E402
from backend.settings import Settings  # noqa: E402

TINY = "Tiny (offline test model)"

devices.CPUINFO = Path("/nonexistent/cpuinfo")  # no native bf16 here: "auto" means float32 in-process too


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Built-in models are built once per test session."""
    path = tmp_path_factory.mktemp("model-cache")
    tiny.ensure(path / "tiny")
    return path


@pytest.fixture
def settings(tmp_path, cache_dir) -> Settings:
    return Settings(offline=True, output_dir=tmp_path / "outputs", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def shared_engine(tmp_path_factory, cache_dir) -> Engine:
    """One engine for the read-only generation tests (loading once keeps the suite fast)."""
    out = tmp_path_factory.mktemp("outputs")
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir))


@pytest.fixture(scope="session")
def test_image():
    """A 96x64 picture with structure (gradients and a block), so resizes and masks are visible."""
    from PIL import Image

    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 255 // 95, y * 255 // 63, (x + y) % 256], axis=-1).astype(np.uint8)
    rgb[16:48, 24:72] = (200, 30, 30)
    return Image.fromarray(rgb)


@pytest.fixture
def mask():
    """The inpainting tests' mask for ``test_image``: a 32×32 square to repaint (white), off-centre."""
    from PIL import Image

    m = Image.new("L", (96, 64), 0)
    m.paste(255, (40, 8, 72, 40))
    return m


def endpoint_args(**changes: object) -> dict:
    """The /txt2img keywords the API tests send (a tiny 64² Euler run), with ``changes``."""
    return dict(
        prompt="a red circle",
        negative_prompt="",
        seed=5,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        batch_size=1,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
        styles=[],
    ) | changes


@pytest.fixture
def tiny_request() -> Txt2ImgRequest:
    return Txt2ImgRequest(
        prompt="a red circle on a blue background",
        seed=1234,
        steps=4,
        guidance_scale=5.0,
        width=64,
        height=64,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def write_registry(path: Path, names: list[str], **fields: object) -> Path:
    """A models file listing several copies of the built-in tiny model (``fields`` override each entry)."""
    data = json.loads(Settings().models_file.read_text())
    entry = next(m for m in data["models"] if m["source"] == "builtin:tiny")
    data["models"] = [{**entry, **fields, "name": name} for name in names]
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def two_model_registry(tmp_path) -> ModelRegistry:
    return ModelRegistry.load(write_registry(tmp_path / "models.json", ["Tiny A", "Tiny B"]))
