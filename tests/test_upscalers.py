"""Upscaler registry: Lanczos, ESRGAN-family model files via spandrel (random weights), tiling, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from spandrel.architectures.ESRGAN import ESRGAN

from backend.images import upscalers
from backend.schema.errors import ValidationError
from backend.settings import Settings


def _esrgan_file(folder, name: str, scale: int, suffix: str = ".safetensors"):
    torch.manual_seed(scale)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=scale)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = folder / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _picture(w: int = 40, h: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture()
def settings(tmp_path):
    _esrgan_file(tmp_path, "tiny-x2", 2)
    _esrgan_file(tmp_path, "tiny-x4", 4)
    return Settings(upscaler_dirs=str(tmp_path))


def test_registry_lists_lanczos_and_model_files(settings):
    assert upscalers.upscaler_names(settings) == ["Lanczos", "Nearest", "tiny-x2", "tiny-x4"]


@pytest.mark.parametrize(("name", "scale"), [("tiny-x2", 2), ("tiny-x4", 4)])
def test_esrgan_model_upscales_and_differs_from_lanczos(settings, name, scale):
    picture = _picture()
    out = upscalers.upscale(picture, name, scale, settings)
    assert out.size == (40 * scale, 32 * scale)
    lanczos = upscalers.upscale(picture, "Lanczos", scale, settings)
    assert lanczos.size == out.size
    assert not np.array_equal(np.asarray(out), np.asarray(lanczos))


def test_model_runs_twice_for_a_larger_scale(settings):
    out = upscalers.upscale(_picture(), "tiny-x2", 3, settings)  # ×2 twice, then Lanczos down to ×3
    assert out.size == (120, 96)


@pytest.mark.parametrize("name", ["tiny-x2", "tiny-x4"])
def test_tiled_equals_untiled_within_tolerance(settings, name):
    picture = _picture(48, 40)
    model = upscalers.load_model(upscalers.model_files(settings)[name], allow_pickle=False)
    whole = np.asarray(model.upscale(picture, tile=0), dtype=np.int16)
    tiled = np.asarray(model.upscale(picture, tile=24, overlap=8), dtype=np.int16)
    assert whole.shape == tiled.shape
    diff = np.abs(whole - tiled)
    # A 1-block ESRGAN sees a few pixels around each output; the cross-faded overlaps hide tile edges.
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8


def test_corrupt_file_is_a_validation_error(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a model at all")
    settings = Settings(upscaler_dirs=str(tmp_path))
    with pytest.raises(ValidationError) as err:
        upscalers.upscale(_picture(), "broken", 2, settings, field="hires_upscaler")
    assert err.value.field == "hires_upscaler" and "broken.safetensors" in str(err.value)


def test_pickle_needs_opt_in(tmp_path):
    _esrgan_file(tmp_path, "pickled", 2, suffix=".pth")
    assert upscalers.upscaler_names(Settings(upscaler_dirs=str(tmp_path))) == ["Lanczos", "Nearest"]
    with pytest.raises(ValidationError, match="SDSTUDIO_ALLOW_PICKLE"):
        upscalers.load_model(tmp_path / "pickled.pth", allow_pickle=False)
    opted_in = Settings(upscaler_dirs=str(tmp_path), allow_pickle=True)
    assert upscalers.upscale(_picture(), "pickled", 2, opted_in).size == (80, 64)


def test_unknown_upscaler_names_the_field(settings):
    with pytest.raises(ValidationError) as err:
        upscalers.upscale(_picture(), "nope", 2, settings, field="upscaler")
    assert err.value.field == "upscaler" and "Lanczos" in str(err.value)


def test_several_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _esrgan_file(a, "first", 2)
    _esrgan_file(b, "second", 2)
    import os

    settings = Settings(upscaler_dirs=f"{a}{os.pathsep}{b}")
    assert upscalers.upscaler_names(settings) == ["Lanczos", "Nearest", "first", "second"]


def test_extras_refusals_name_the_field(settings):
    with pytest.raises(ValidationError) as err:
        upscalers.extras_upscale(None, "Lanczos", 2, settings)
    assert err.value.field == "image"
    small = Settings(upscaler_dirs=settings.upscaler_dirs, max_image_pixels=100 * 100)
    with pytest.raises(ValidationError) as err:
        upscalers.extras_upscale(_picture(40, 32), "Lanczos", 4, small)
    assert err.value.field == "scale" and "use scale 2.79 or less" in str(err.value)
    assert upscalers.extras_upscale(_picture(40, 32), "tiny-x2", 2, settings).size == (80, 64)
