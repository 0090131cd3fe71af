"""The memory plan's 8-bit transformer, for real: the tiny FLUX loaded with its transformer in torchao's int8
weight-only (as the plan loads it on a GPU too small for bf16) generates on the CPU, close to the bf16/fp32 picture
but not equal, and the log says so; a single file's transformer quantizes the same way; a GGUF transformer is never
quantized again."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from backend.generation.engine import Engine
from backend.models import dit_files, tiny_dit
from backend.models.checkpoints import config_dir
from backend.models.devices import QUANTIZED_TRANSFORMER, plan_memory, weight_sizes
from backend.models.loaders import load_pipeline
from backend.models.pipelines import PipelineCache
from backend.models.quantize import quantization, torchao_config
from backend.models.registry import ModelRegistry
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels
from .dit_files import save_gguf, save_transformer
from .ldm_layout import save_config_folder

FLUX = "Tiny FLUX (offline test model)"


def engine_for(settings: Settings, quantize: bool) -> Engine:
    registry = ModelRegistry.load(settings.models_file)
    cache = PipelineCache(registry, settings, loader=functools.partial(load_pipeline, quantize=quantize))
    return Engine(settings, registry=registry, cache=cache)


def picture(engine: Engine):
    request = Txt2ImgRequest(prompt="a red circle on a blue background", seed=7, steps=3, width=64, height=64,
                             sampler="Euler", model=FLUX, guidance_scale=1.0)
    return engine.run(request)


def test_an_8_bit_transformer_generates_close_to_the_full_precision_one(tmp_path, cache_dir, caplog):
    settings = Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, save_outputs=False)
    base = pixels(picture(engine_for(settings, quantize=False)).images[0])
    with caplog.at_level(logging.INFO, logger="backend.models.pipelines"):
        quantized_engine = engine_for(settings, quantize=True)
        result = picture(quantized_engine)
    transformer = quantized_engine.cache.pipeline(FLUX, "txt2img").transformer
    assert quantization(transformer) == "torchao"
    assert transformer.transformer_blocks[0].attn.to_q.weight.__class__.__name__ == "Int8Tensor"
    assert "8-bit transformer (int8 weight-only (torchao))" in caplog.text
    assert "8-bit transformer (int8 weight-only (torchao))" in quantized_engine.cache.peek(FLUX).memory_options
    delta = np.abs(pixels(result.images[0]) - base)
    print(f"8-bit vs full precision: mean {delta.mean():.2f}, max {delta.max()} levels")
    # int8 weights with a scale per row: the picture moves a little, it is the same picture (measured with
    # pytest -s: mean 0.13, max 1 level of 255).
    assert 0 < delta.mean() < 1 and delta.max() <= 8


@pytest.fixture(scope="module")
def flux_files(cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized-files")
    pipe = DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / "tiny-flux", "flux"))
    save_config_folder(pipe, root / "configs" / "flux")
    config = str(config_dir(Settings(cache_dir=cache_dir, checkpoint_configs=root / "configs"), "flux"))
    return {"config": config, "safetensors": save_transformer(pipe, "flux", root / "flux-dev.safetensors"),
            "gguf": save_gguf(pipe, "flux", root / "flux-dev-Q8_0.gguf")}


def test_a_single_files_transformer_quantizes_but_a_gguf_one_stays_gguf(flux_files):
    config = flux_files["config"]
    loaded = dit_files.load_transformer(flux_files["safetensors"], "flux", config, torch.float32, torchao_config())
    assert quantization(loaded) == "torchao"
    gguf = dit_files.load_transformer(flux_files["gguf"], "flux", config, torch.float32, torchao_config())
    assert quantization(gguf) == "gguf"  # the plan's quantizer is not applied on top of GGUF's
    assert hasattr(gguf.transformer_blocks[0].attn.to_q.weight, "quant_type")
    # The plan never asks for it either: a GGUF file's transformer is sized as already quantized.
    sizes = weight_sizes(flux_files["gguf"])
    assert set(sizes) == {QUANTIZED_TRANSFORMER}
    plan = plan_memory(sizes[QUANTIZED_TRANSFORMER] * 0.1, sizes)
    assert not plan.quantized and not plan.why_not
