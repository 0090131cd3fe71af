"""img2img and inpaint on the tiny model: strength, masks, both inpainting strategies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from backend.generation.engine import Engine
from backend.images.ops import resize
from backend.models.registry import ModelRegistry
from backend.schema.choices import RESIZE_MODES
from backend.schema.errors import ValidationError
from backend.schema.geometry import binary_mask, size_from_image
from backend.schema.requests import Img2ImgRequest, InpaintRequest
from backend.settings import Settings

from .conftest import TINY, pixels, write_registry


@pytest.fixture
def img2img(test_image) -> Img2ImgRequest:
    return Img2ImgRequest(
        prompt="a red circle",
        image=test_image,
        seed=7,
        steps=10,
        strength=0.6,
        guidance_scale=5.0,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
    )


@pytest.fixture
def inpaint(test_image, mask) -> InpaintRequest:
    return InpaintRequest(
        prompt="a red circle",
        image=test_image,
        mask=mask,
        seed=7,
        steps=4,
        strength=1.0,
        mask_blur=2,
        guidance_scale=5.0,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
    )


def far_from(mask: Image.Image, distance: int) -> np.ndarray:
    """Pixels more than ``distance`` pixels away from any masked pixel."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * distance + 1))
    return np.asarray(grown) == 0


# img2img ------------------------------------------------------------------------------------------


def test_img2img_is_reproducible_and_follows_the_input(shared_engine, img2img, test_image):
    first = pixels(shared_engine.run(img2img).images[0])
    assert np.array_equal(first, pixels(shared_engine.run(img2img).images[0]))
    flipped = img2img.replace(image=test_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert not np.array_equal(first, pixels(shared_engine.run(flipped).images[0]))
    assert not np.array_equal(first, pixels(shared_engine.run(img2img.replace(seed=8)).images[0]))


def test_strength_sets_denoising_steps_and_distance(shared_engine, img2img):
    # Random tiny weights make the VAE round trip unfaithful, so distances are measured from the
    # one-step result (the input as the VAE sees it), not from the input pixels.
    reference = pixels(shared_engine.run(img2img.replace(strength=0.1)).images[0])

    def run(strength):
        events = []
        result = shared_engine.run(img2img.replace(strength=strength), on_step=events.append)
        distance = np.abs(pixels(result.images[0]) - reference).mean()
        return len(events), distance, result.infotext

    low_steps, low_dist, low_text = run(0.3)
    high_steps, high_dist, _ = run(0.9)
    assert (low_steps, high_steps) == (3, 9)  # about steps × strength
    assert high_dist > low_dist
    assert "Denoising strength: 0.3" in low_text


def test_output_size_follows_input_unless_set(shared_engine, img2img, test_image):
    assert shared_engine.run(img2img).images[0].size == (96, 64)
    assert shared_engine.run(img2img.replace(width=64, height=64)).images[0].size == (64, 64)
    odd = test_image.resize((101, 75))
    assert shared_engine.run(img2img.replace(image=odd)).images[0].size == (104, 72)


def test_size_from_image_rounds_and_fits():
    assert size_from_image(Image.new("RGB", (101, 75)), 2048, 2048) == (104, 72)
    assert size_from_image(Image.new("RGB", (4000, 2000)), 1024, 1024) == (1024, 512)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_resize_modes(test_image, mode):
    out = resize(test_image, 64, 64, mode)
    assert out.size == (64, 64)
    px = np.asarray(out)
    if mode == "Crop and resize":  # the centre block fills more of the frame than when squeezed
        assert (px[..., 0] == 200).sum() > (np.asarray(resize(test_image, 64, 64))[..., 0] == 200).sum()
    if mode == "Resize and fill":  # the whole picture, fitted and centred; the borders are filled
        fitted = ImageOps.contain(test_image, (64, 64), Image.Resampling.LANCZOS)
        top = (64 - fitted.height) // 2
        assert np.array_equal(px[top : top + fitted.height], np.asarray(fitted))
        assert px[:top].std() > 0


def test_img2img_needs_an_image(shared_engine, img2img):
    with pytest.raises(ValidationError, match="upload an image"):
        shared_engine.run(img2img.replace(image=None))
    with pytest.raises(ValidationError, match="strength must be between 0 and 1"):
        shared_engine.run(img2img.replace(strength=1.5))


# inpaint ------------------------------------------------------------------------------------------


def test_only_the_mask_region_changes(shared_engine, inpaint, test_image, mask):
    out = pixels(shared_engine.run(inpaint).images[0])
    src = pixels(test_image)
    outside = far_from(mask, 3 * inpaint.mask_blur)
    inside = np.asarray(mask) == 255
    assert np.array_equal(out[outside], src[outside])
    assert (np.abs(out[inside] - src[inside]).sum(-1) > 0).mean() > 0.95


def test_mask_polarity(shared_engine, inpaint, test_image, mask):
    inverted = mask.point(lambda v: 255 - v)
    out = pixels(shared_engine.run(inpaint.replace(mask=inverted)).images[0])
    src = pixels(test_image)
    # Now the former hole is kept and the rest is repainted.
    keep = far_from(inverted, 3 * inpaint.mask_blur)
    assert keep.sum() > 100
    assert np.array_equal(out[keep], src[keep])
    assert not np.array_equal(out[np.asarray(mask) == 0], src[np.asarray(mask) == 0])


def test_only_masked_area(shared_engine, inpaint, test_image, mask):
    result = shared_engine.run(inpaint.replace(inpaint_area="Only masked", padding=8))
    out, src = pixels(result.images[0]), pixels(test_image)
    outside = far_from(mask, 3 * inpaint.mask_blur)
    assert out.shape == src.shape and np.array_equal(out[outside], src[outside])
    assert not np.array_equal(out, src)
    assert "Inpaint area: Only masked" in result.infotext and "Mask blur: 2" in result.infotext


def test_mask_errors_and_alignment(shared_engine, inpaint, mask):
    with pytest.raises(ValidationError, match="paint the area to repaint"):
        shared_engine.run(inpaint.replace(mask=Image.new("L", (96, 64), 0)))
    with pytest.raises(ValidationError, match="paint the area to repaint"):
        shared_engine.run(inpaint.replace(mask=None))
    # A mask returned at half size (as some editors do) is aligned to the image.
    aligned = binary_mask(mask.resize((48, 32), Image.Resampling.NEAREST), (96, 64))
    assert aligned.size == (96, 64) and np.array_equal(np.asarray(aligned), np.asarray(mask))


def test_rgba_layer_mask_uses_painted_pixels():
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((2, 3), (255, 255, 255, 255))
    m = np.asarray(binary_mask(layer, (8, 8)))
    assert m[3, 2] == 255 and m.sum() == 255


def unet_input_channels(pipe) -> list[int]:
    seen: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    return seen


def test_four_channel_model_uses_latent_blending(tmp_path, cache_dir, inpaint):
    engine = Engine(Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir))
    seen = unet_input_channels(engine.cache.pipeline(TINY, "inpaint"))
    engine.run(inpaint)
    assert seen and set(seen) == {4}


def test_inpaint_variant_uses_the_nine_channel_unet(tmp_path, cache_dir, inpaint):
    path = write_registry(tmp_path / "m.json", ["Tiny+inpaint"], inpaint="builtin:tiny-inpaint")
    engine = Engine(
        Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, default_model="Tiny+inpaint"),
        ModelRegistry.load(path),
    )
    base = engine.cache.pipeline("Tiny+inpaint", "txt2img")
    pipe = engine.cache.pipeline("Tiny+inpaint", "inpaint")
    assert pipe.unet.config.in_channels == 9 and pipe.unet is not base.unet
    assert pipe.vae is base.vae and pipe.text_encoder is base.text_encoder  # only the UNet differs
    seen = unet_input_channels(pipe)
    out = engine.run(inpaint.replace(model="Tiny+inpaint"))
    assert seen and set(seen) == {9}
    src, got = pixels(inpaint.image), pixels(out.images[0])
    outside = far_from(inpaint.mask, 3 * inpaint.mask_blur)
    assert np.array_equal(got[outside], src[outside])


def test_inpainting_model_is_refused_outside_inpaint(tmp_path, cache_dir, tiny_request):
    path = write_registry(tmp_path / "m.json", ["Inpaint only"], source="builtin:tiny-inpaint")
    engine = Engine(
        Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, default_model="Inpaint only"),
        ModelRegistry.load(path),
    )
    with pytest.raises(ValidationError, match="is an inpainting model: use it in the inpaint tab"):
        engine.run(tiny_request.replace(model="Inpaint only"))


def test_strength_too_low_for_any_step_is_refused(shared_engine, img2img):
    with pytest.raises(ValidationError, match=r"strength 0.05 with 10 steps runs no denoising step: use strength 0.1"):
        shared_engine.run(img2img.replace(strength=0.05, steps=10))
    assert shared_engine.run(img2img.replace(strength=0.1, steps=10)).images


def test_inpaint_resize_mode_crops_image_and_mask_together(shared_engine, inpaint, test_image, mask):
    result = shared_engine.run(inpaint.replace(width=64, height=64, resize_mode="Crop and resize"))
    out = pixels(result.images[0])
    cropped = pixels(resize(test_image, 64, 64, "Crop and resize"))
    cropped_mask = resize(mask, 64, 64, "Crop and resize").point(lambda v: 255 if v > 127 else 0)
    outside = far_from(cropped_mask, 3 * inpaint.mask_blur)
    assert out.shape == (64, 64, 3) and outside.sum() > 500
    assert np.array_equal(out[outside], cropped[outside])
