"""Outpainting: the picture grows where asked, the old pixels stay exactly, the fill reaches the pipeline, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.images.outpaint import extend
from backend.schema.errors import ValidationError
from backend.schema.geometry import Margins, run_size
from backend.schema.requests import InpaintRequest
from backend.schema.validate import validate
from backend.settings import Settings
from tests.conftest import TINY


def _request(image: Image.Image, **changes) -> InpaintRequest:
    request = InpaintRequest(
        prompt="a red circle on a blue background",
        seed=5,
        steps=4,
        guidance_scale=5.0,
        width=0,
        height=0,
        sampler="Euler",
        model=TINY,
        image=image,
        strength=1.0,
    )
    return request.replace(**changes)


@pytest.fixture(scope="module")
def odd_picture(test_image) -> Image.Image:
    return test_image.crop((0, 0, 61, 58))  # sizes that are not multiples of 8: the padding path


def test_canvas_geometry_and_mask(odd_picture):
    margins = Margins(left=16, up=8)
    canvas = extend(odd_picture, None, margins, "Blurred edge", seed=1)
    # 61+16 = 77 → 80 wide, 58+8 = 66 → 72 high: the padding goes to the sides that grow.
    assert canvas.image.size == run_size(odd_picture.size, margins) == (80, 72)
    assert canvas.size == (77, 66) and canvas.box == (3, 6, 80, 72)
    mask = np.asarray(canvas.mask)
    old = (slice(14, 72), slice(19, 80))  # where the old picture sits in the run canvas
    assert (mask[old] == 0).all() and mask.sum() == 255 * (80 * 72 - 61 * 58)
    assert np.array_equal(np.asarray(canvas.image)[old], np.asarray(odd_picture))
    # Blurred edge: the new area continues the old picture's border colours.
    edge = np.asarray(canvas.image, dtype=np.int16)[40, 18]
    assert np.abs(edge - np.asarray(odd_picture, dtype=np.int16)[26, 0]).max() < 60


def test_noise_fill_follows_the_seed(odd_picture):
    margins = Margins(right=8)
    a, b, c = (extend(odd_picture, None, margins, "Noise", seed=s).image for s in (1, 1, 2))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    ("sides", "offset"), [({"outpaint_left": 16, "outpaint_down": 24}, (16, 0)), ({"outpaint_up": 8}, (0, 8))]
)
def test_outpaint_grows_where_asked_and_keeps_old_pixels_exactly(shared_engine, odd_picture, sides, offset):
    result = shared_engine.run(_request(odd_picture, **sides))
    out = np.asarray(result.images[0])
    margins = Margins(**{k.removeprefix("outpaint_"): v for k, v in sides.items()})
    assert result.images[0].size == (61 + margins.left + margins.right, 58 + margins.up + margins.down)
    x, y = offset
    assert np.array_equal(out[y : y + 58, x : x + 61], np.asarray(odd_picture))
    # The new area was generated: not the fill the canvas started with.
    canvas = extend(odd_picture, None, margins, "Blurred edge", seed=5)
    filled = np.asarray(canvas.image.crop(canvas.box), dtype=np.int16)
    grown = np.ones(out.shape[:2], bool)
    grown[y : y + 58, x : x + 61] = False
    assert np.abs(out.astype(np.int16) - filled)[grown].mean() > 5
    assert result.extras["mask"].size == result.images[0].size


def test_fill_and_painted_mask_reach_the_result(shared_engine, odd_picture):
    low = {"outpaint_right": 16, "strength": 0.5}
    blurred = np.asarray(shared_engine.run(_request(odd_picture, **low)).images[0], dtype=np.int16)
    noise = np.asarray(shared_engine.run(_request(odd_picture, **low, outpaint_fill="Noise")).images[0], np.int16)
    assert np.abs(blurred - noise)[:, 61:].mean() > 5
    # A stroke on the old picture is repainted too; the rest of the old picture stays exact.
    mask = Image.new("L", odd_picture.size, 0)
    mask.paste(255, (10, 10, 30, 30))
    painted = np.asarray(shared_engine.run(_request(odd_picture, **low, mask=mask, mask_blur=0)).images[0])
    old = np.asarray(odd_picture)
    assert not np.array_equal(painted[10:30, 10:30], old[10:30, 10:30])
    keep = np.ones(old.shape[:2], bool)
    keep[10:30, 10:30] = False
    assert np.array_equal(painted[:, :61][keep], old[keep])


def test_outpaint_past_the_maximum_size_names_the_side(odd_picture):
    settings = Settings(offline=True, max_width=128, max_height=128)
    with pytest.raises(ValidationError) as err:
        validate(_request(odd_picture, outpaint_right=64, outpaint_left=8), settings)
    assert err.value.field == "outpaint_right" and "above the limit 128" in str(err.value)
    assert "at most 64 px left and right" in str(err.value)
    with pytest.raises(ValidationError) as err:
        validate(_request(odd_picture, outpaint_up=80), settings)
    assert err.value.field == "outpaint_up"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outpaint_left": -8}, "outpaint_left"),
        ({"outpaint_down": 2.5}, "outpaint_down"),
        ({"outpaint_right": 8, "outpaint_fill": "plaid"}, "outpaint_fill"),
    ],
)
def test_bad_outpaint_fields(odd_picture, changes, field):
    with pytest.raises(ValidationError) as err:
        validate(_request(odd_picture, **changes), Settings(offline=True))
    assert err.value.field == field


def test_outpaint_needs_no_mask_but_inpaint_does(odd_picture):
    valid = validate(_request(odd_picture, outpaint_right=8), Settings(offline=True))
    assert (valid.width, valid.height) == (72, 64)  # the grown 69×58 picture padded to multiples of 8
    with pytest.raises(ValidationError) as err:
        validate(_request(odd_picture), Settings(offline=True))
    assert err.value.field == "mask"
