"""FLUX.1 Fill (issue #25): a Fill model inpaints through FluxFillPipeline, chosen from its transformer, keeps the
unmasked pixels exactly and is refused outside the inpaint tab by field name; a Fill transformer file in the original
BFL key names is detected as "FLUX.1 Fill" and inpaints with the paired text encoders and VAE.

Everything runs on the tiny random-weight Fill model (``builtin:tiny-flux-fill``) and files written from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusers import DiffusionPipeline, FluxFillPipeline
from PIL import Image

from backend.generation.engine import Engine
from backend.models import dit_keys, tiny_dit
from backend.models.checkpoints import Shape
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from backend.settings import Settings

from .conftest import pixels
from .dit_files import save_gguf, save_parts, save_transformer, transformer_state
from .ldm_layout import save_config_folder

FILL = "Tiny FLUX Fill (offline test model)"
COMMON = dict(prompt="a red circle", steps=3, width=64, height=64, sampler="Euler", guidance_scale=1.0)


def picture() -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def square_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def inpaint(model: str, seed: int = 3, **changes) -> InpaintRequest:
    fields = {**COMMON, "model": model, "seed": seed, "image": picture(), "mask": square_mask(), "mask_blur": 0}
    return InpaintRequest(**{**fields, **changes})


@pytest.fixture(scope="module")
def fill_pipe(cache_dir) -> DiffusionPipeline:
    return DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / "tiny-flux-fill", "flux-fill"))


@pytest.fixture(scope="module")
def folders(fill_pipe, cache_dir, tmp_path_factory) -> Path:
    """A Fill transformer-only file in the original key names, the text encoders and VAE as separate files, and the
    FLUX config folder (the dev one: a Fill file's channels come from its shapes)."""
    root = tmp_path_factory.mktemp("fill-files")
    dev = DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / "tiny-flux", "flux"))
    save_config_folder(dev, root / "configs" / "flux")
    save_transformer(fill_pipe, "flux", root / "unet" / "flux1-fill-dev.safetensors")
    save_gguf(fill_pipe, "flux", root / "unet" / "flux1-fill-dev-Q8_0.gguf")
    save_parts(fill_pipe, "flux", root / "te", root / "vae", "ae")
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory, cache_dir) -> Engine:
    return Engine(Settings(
        offline=True, checkpoints_dir=str(folders / "checkpoints"), unet_dir=str(folders / "unet"),
        text_encoder_dir=str(folders / "te"), vae_dir=str(folders / "vae"), checkpoint_configs=folders / "configs",
        output_dir=tmp_path_factory.mktemp("fill-out"), cache_dir=cache_dir, max_models=4,
    ))


def test_the_tiny_fill_transformer_takes_what_fluxfillpipeline_packs(fill_pipe):
    # Latents, masked-picture latents (16 channels · 2×2 each) and the mask ((2 · VAE scale)² pixels a token).
    assert fill_pipe.vae_scale_factor == 2 and tiny_dit.FILL_IN_CHANNELS == 64 + 64 + 16
    assert fill_pipe.transformer.config.in_channels == tiny_dit.FILL_IN_CHANNELS
    assert dit_keys.is_fill_channels(384, 64) and not dit_keys.is_fill_channels(128, 64)  # Fill dev; Depth/Canny
    assert not dit_keys.is_fill_channels(64, None)


def test_fill_inpaints_through_fluxfillpipeline_and_keeps_unmasked_pixels(engine):
    first = engine.run(inpaint(FILL))
    assert isinstance(engine.cache.pipeline(FILL, "inpaint"), FluxFillPipeline)
    out, original, inside = pixels(first.images[0]), pixels(picture()), np.asarray(square_mask()) > 0
    assert np.array_equal(out[~inside], original[~inside])  # pasted back outside the mask, exactly
    assert np.abs(out[inside] - original[inside]).mean() > 5  # the masked square is redrawn
    assert np.array_equal(pixels(engine.run(inpaint(FILL)).images[0]), out)  # same seed, same pixels
    other = pixels(engine.run(inpaint(FILL, seed=4)).images[0])
    assert not np.array_equal(other[inside], out[inside]) and np.array_equal(other[~inside], out[~inside])


def test_outpainting_runs_the_fill_model_and_keeps_the_picture(engine):
    result = engine.run(inpaint(FILL, width=64, height=96, outpaint_down=32, mask=Image.new("L", (64, 64), 0)))
    out = pixels(result.images[0])
    assert out.shape[:2] == (96, 64)
    assert np.array_equal(out[:64], pixels(picture()))  # the picture itself untouched; the new strip drawn


def test_a_fill_model_is_refused_outside_the_inpaint_tab_by_field_name(engine):
    for request in (Txt2ImgRequest(**COMMON, model=FILL, seed=1),
                    Img2ImgRequest(**COMMON, model=FILL, seed=1, image=picture())):
        with pytest.raises(ValidationError, match="inpainting model") as caught:
            engine.run(request)
        assert caught.value.field == "model"
    for changes, field in (({"guidance_scale": 4.0}, "guidance_scale"), ({"inpaint_area": "Only masked"},
                                                                        "inpaint_area")):
        with pytest.raises(ValidationError) as caught:
            engine.run(inpaint(FILL, **changes))
        assert caught.value.field == field


def test_a_fill_transformer_file_is_detected_and_inpaints(engine, fill_pipe):
    shapes = {k: Shape(list(v.shape)) for k, v in transformer_state(fill_pipe, "flux").items()}
    assert dit_keys.identify(shapes) == ("flux-fill", "FLUX.1 Fill")
    spec = engine.registry.get("flux1-fill-dev")
    assert spec.family == "flux" and "FLUX.1 Fill" in spec.description
    out = pixels(engine.run(inpaint("flux1-fill-dev")).images[0])
    folder = pixels(engine.run(inpaint(FILL)).images[0])
    assert isinstance(engine.cache.pipeline("flux1-fill-dev", "inpaint"), FluxFillPipeline)
    inside = np.asarray(square_mask()) > 0
    assert np.array_equal(out[~inside], pixels(picture())[~inside])
    assert np.abs(out - folder).max() <= 1  # the same weights as the folder model: the same picture
    with pytest.raises(ValidationError) as caught:
        engine.run(Txt2ImgRequest(**COMMON, model="flux1-fill-dev", seed=1))
    assert caught.value.field == "model"


def test_a_fill_gguf_file_is_detected_and_inpaints(engine):
    assert "FLUX.1 Fill" in engine.registry.get("flux1-fill-dev-Q8_0").description
    out = pixels(engine.run(inpaint("flux1-fill-dev-Q8_0")).images[0])
    inside = np.asarray(square_mask()) > 0
    assert np.array_equal(out[~inside], pixels(picture())[~inside])
    assert np.abs(out[inside] - pixels(picture())[inside]).mean() > 5


def test_the_fill_hub_model_is_listed(engine):
    spec = engine.registry.get("FLUX.1 Fill dev")
    assert (spec.source, spec.family) == ("black-forest-labs/FLUX.1-Fill-dev", "flux")
    assert engine.needs_download("FLUX.1 Fill dev")  # offline: a hub model to download once
