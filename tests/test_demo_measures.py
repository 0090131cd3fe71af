"""The demo model's evaluation measures themselves: a measure that cannot see a flaw would let a card claim anything."""

from __future__ import annotations

import sys

import numpy as np

from backend.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "training"))

import data  # noqa: E402
import evaluate  # noqa: E402


def test_clean_pictures_have_no_speck_and_a_planted_blob_is_found():
    for index in range(20):
        picture, _, scene = data.sample(7, index)
        assert data.specks(picture, scene.colour, scene.background) == 0, "edges blend two colours: not a speck"
    picture, _, scene = data.sample(7, 0)
    odd = next(c for c in data.COLOURS if c not in (scene.colour, scene.background))
    spotted = picture.copy()
    spotted[30:32, 30:32] = data.PALETTE[odd]  # 4 connected pixels
    assert data.specks(spotted, scene.colour, scene.background) == 1
    spotted = picture.copy()
    spotted[30, 30] = data.PALETTE[odd]  # 1 pixel: below the blob size
    assert data.specks(spotted, scene.colour, scene.background) == 0


def test_classifier_reports_where_the_shape_is():
    rng = np.random.default_rng(3)
    for side in evaluate.SIDES:
        scene = data.sample_scene(rng, p_position_word=0.0)
        while True:
            scene = data.sample_scene(rng, p_position_word=1.0)
            if scene.position_word == side:
                break
        got = data.classify_picture(data.render(scene))
        assert abs(got["cx"] - scene.cx) <= 3 and abs(got["cy"] - scene.cy) <= 3  # a triangle's box centre is lower
        # A shape wider than a third cannot sit wholly in the outer third: the generator stops it at the border.
        assert evaluate.on_side(side, got["cx"], got["cy"]) or scene.size > data.RESOLUTION / 3


def test_caption_fragments_are_true_of_their_picture():
    """The refine stage's short captions ("red", "a red circle", "blue background") only name what is drawn."""
    rng = np.random.default_rng(0)
    seen = set()
    for index in range(300):
        scene = data.scene(0, index)
        assert scene == data.sample(0, index)[2]  # the same scene as the cached picture of that index
        fragment = data.fragment(scene, rng)
        assert set(fragment.split()) <= set(scene.caption.split()), (fragment, scene.caption)
        seen.add(len(fragment.split()))
    assert {1, 2, 3} <= seen  # bare words, "red circle", "a red circle" all occur
