"""The DiT block cache (``dit_cache``: diffusers' First Block Cache) on the tiny FLUX and SD 3.x models.

On steps whose first transformer block changed less than the threshold the other blocks do not run: the pictures
change a little, the later blocks run fewer times (counted with forward hooks), and the hooks are gone after the
call, so the next request without the cache gives the base pixels exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.generation import step_cache
from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.models.tiny_dit import build_sd3
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import TINY, pixels

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
THRESHOLD = 0.5
STEPS = 6


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    return Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("dit-cache"), cache_dir=cache_dir))


def request(model: str = FLUX, **changes) -> Txt2ImgRequest:
    fields = dict(prompt="a red circle", seed=3, steps=STEPS, width=64, height=64, sampler="Euler", model=model,
                  guidance_scale=1.0)  # FLUX without true CFG: one transformer call per step
    return Txt2ImgRequest(**{**fields, **changes})


class Calls:
    """Counts a module's forward calls while registered."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self.handle = module.register_forward_hook(self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


def test_flux_cache_skips_blocks_changes_pixels_a_little_and_leaves_no_trace(engine):
    base = engine.run(request())
    transformer = engine.cache.pipeline(FLUX, "txt2img").transformer
    # The tail block's MLP runs only on the steps the cache computes in full (a skipped block's own call remains).
    head, tail = Calls(transformer.transformer_blocks[0].ff), Calls(transformer.single_transformer_blocks[-1].proj_mlp)
    cached = engine.run(request(dit_cache=THRESHOLD))
    assert head.count == STEPS and 1 <= tail.count < head.count, (head.count, tail.count)
    head.count = tail.count = 0
    again = engine.run(request())
    head.handle.remove(), tail.handle.remove()
    assert head.count == tail.count == STEPS  # the hooks went with the call: every block runs again
    difference = np.abs(pixels(cached.images[0]) - pixels(base.images[0]))
    assert 0 < difference.mean() < 40, difference.mean()
    assert np.array_equal(pixels(again.images[0]), pixels(base.images[0]))
    assert all("forward" not in vars(block) for block in step_cache.dit_blocks(transformer))


def test_the_infotext_says_it_only_when_used_and_png_info_reads_it_back(engine):
    cached = engine.run(request(dit_cache=THRESHOLD, steps=3))
    assert f"First block cache: {THRESHOLD}" in cached.infotexts[0]
    again = parse_infotext(cached.infotexts[0]).to_request(Txt2ImgRequest)
    assert again.dit_cache == THRESHOLD
    assert np.array_equal(pixels(engine.run(again).images[0]), pixels(cached.images[0]))
    assert "First block cache" not in engine.run(request(steps=3)).infotexts[0]


def test_true_cfg_runs_both_halves_through_the_cache(engine):
    """FluxPipeline's true CFG calls the transformer twice a step, each in its own cache context."""
    plain = pixels(engine.run(request(guidance_scale=3.0, negative_prompt="blue")).images[0])
    cached = pixels(engine.run(request(guidance_scale=3.0, negative_prompt="blue", dit_cache=THRESHOLD)).images[0])
    assert not np.array_equal(plain, cached)


def test_sd3_transformer_with_three_blocks_skips_and_restores():
    """SD 3.x's last block always runs (it returns no text stream); the blocks before it are cached."""
    pipe = build_sd3()
    for part in pipe.components.values():  # built, not loaded: modules start in training mode (T5's dropout)
        if isinstance(part, torch.nn.Module):
            part.eval()
    torch.manual_seed(0)
    pipe.transformer = type(pipe.transformer).from_config({**pipe.transformer.config, "num_layers": 3}).eval()
    tail = Calls(pipe.transformer.transformer_blocks[1].ff)

    def picture() -> np.ndarray:
        out = pipe("a cat", num_inference_steps=4, height=64, width=64, generator=torch.Generator().manual_seed(1),
                   output_type="np")
        return out.images[0]

    base = picture()
    full = tail.count
    with step_cache.dit_cached(pipe, THRESHOLD) as on:
        cached = picture()
    assert on and full == 4 and tail.count - full < full
    assert not np.array_equal(base, cached)
    assert np.array_equal(picture(), base)


def test_a_one_block_transformer_runs_unchanged(engine):
    """The tiny SD3 model has one block: nothing to skip, so the cache leaves it alone and the pixels stay."""
    base = pixels(engine.run(request(SD3, guidance_scale=4.5)).images[0])
    assert np.array_equal(pixels(engine.run(request(SD3, guidance_scale=4.5, dit_cache=THRESHOLD)).images[0]), base)


def test_sd_models_refuse_it_by_field_name(engine):
    with pytest.raises(ValidationError) as refused:
        engine.run(request(TINY, dit_cache=0.1))
    assert refused.value.field == "dit_cache" and "leave it at 0" in str(refused.value)
