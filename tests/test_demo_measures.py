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


def test_card_names_the_position_words_that_do_not_work():
    """The card renders each position word's figure and calls one under 90% not reliable (v1's card claimed
    position words its model ignored)."""
    import model_card

    positions = {side: {"with_word": 0.97, "without_word": 0.05} for side in evaluate.SIDES}
    positions["center"] = {"with_word": 0.5, "without_word": 0.2}
    words = {
        "prompts_per_word": 32,
        "positions": positions,
        "measured": "today",
        "sizes_px": {"small": 24.0, "large": 43.0, "no size word": 33.0},
    }
    text = model_card._word_figures(words)
    reliable, _, weak = text.partition("Not reliable")
    assert "`in the center` 50% / 20%" in text
    assert "`in the center`" in weak and "`in the center`" not in reliable.split("Reliable")[1]
    assert "`on the left`" in reliable.split("Reliable")[1]


def test_a_speck_is_a_third_colour_not_a_wrong_colour():
    """Generated pictures are measured against the colours they show: a shape in the wrong colour is a
    prompt-following error (counted by the colour figures), a blob of a third colour is a speck."""
    picture, _, scene = data.sample(7, 3)
    wrong = next(c for c in data.COLOURS if c not in (scene.colour, scene.background))
    assert data.specks(picture, wrong, scene.background) >= 1  # against the caption's colour: all shape
    assert data.drawn_specks(picture, wrong, scene.background) == 0
    third = next(c for c in data.COLOURS if c not in (scene.colour, scene.background, wrong))
    spotted = picture.copy()
    spotted[1:4, 1:4] = data.PALETTE[third]
    assert data.drawn_specks(spotted, wrong, scene.background) == 1


def test_the_card_is_measured_at_the_apps_defaults_for_the_model():
    """The figures on the card hold for what a user gets without touching a slider: the evaluation runs at the
    demo model's defaults in presets/models.json, and the shipped evaluation.json was measured at them."""
    import json

    from backend.models.registry import ModelRegistry

    defaults = ModelRegistry.load(PROJECT_ROOT / "presets" / "models.json").get("Demo shapes (offline)").defaults
    assert (evaluate.GUIDANCE, evaluate.STEPS) == (defaults.guidance_scale, defaults.steps)
    figures = json.loads((PROJECT_ROOT / "models" / "demo" / "evaluation.json").read_text())
    for key in ("txt2img", "specks", "words"):
        assert figures[key]["guidance_scale"] == defaults.guidance_scale, key
    assert figures["txt2img"]["steps"] == figures["specks"]["steps"] == defaults.steps
