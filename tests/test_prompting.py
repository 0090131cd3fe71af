"""A1111 prompt syntax, long prompts and clip skip on the tiny offline model."""

from __future__ import annotations

import numpy as np
import pytest

from backend.generation.prompting import count_label, to_compel, weighted_chunks
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest

from .conftest import TINY, pixels


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


@pytest.mark.parametrize(
    ("prompt", "runs"),
    [
        ("a (red:1.6) cat", [("a ", 1.0), ("red", 1.6), (" cat", 1.0)]),
        ("((big))", [("big", pytest.approx(1.21))]),
        ("[small]", [("small", pytest.approx(1 / 1.1))]),
        ("(a (b:1.5))", [("a ", pytest.approx(1.1)), ("b", pytest.approx(1.65))]),
        (r"\(literal\)", [("(literal)", 1.0)]),
        ("an (unbalanced one", [("an (unbalanced one", 1.0)]),
        ("a ] stray", [("a ] stray", 1.0)]),
    ],
)
def test_a1111_weights(prompt, runs):
    assert weighted_chunks(prompt) == [runs]


def test_break_splits_chunks_and_compel_syntax():
    assert len(weighted_chunks("a cat BREAK a dog")) == 2
    assert to_compel("a (red:1.6) cat") == "a  (red)1.6  cat"
    assert to_compel("an (unbalanced") == r"an \(unbalanced"


def test_token_count_label(shared_engine):
    tokenizer = shared_engine.cache.model(shared_engine.default_model).base.tokenizer
    assert count_label(tokenizer, "red") == "1/75"
    assert count_label(tokenizer, "(red:1.6)") == "1/75"  # brackets and weights are not tokens
    assert count_label(tokenizer, " ".join(["red"] * 80)) == "80/150"


@pytest.fixture
def run(shared_engine, tiny_request):
    return lambda **change: shared_engine.run(tiny_request.replace(**change)).images[0]


def test_weight_changes_the_image(run):
    assert not same(run(prompt="a red circle"), run(prompt="a (red:1.6) circle"))
    assert not same(run(prompt="a red circle"), run(prompt="a [red] circle"))


def test_weight_one_equals_plain(run):
    # The compel path for a weight of 1 gives the pipeline's own encoding: same pixels.
    assert same(run(prompt="a red circle"), run(prompt="a (red:1) circle"))


def test_words_after_token_77_change_the_image(run):
    head = " ".join(["blue square"] * 60)  # 120 tokens
    assert not same(run(prompt=head + " red"), run(prompt=head + " green"))
    assert not same(run(prompt=head + " red"), run(prompt=head))


def test_unbalanced_bracket_is_literal(run):
    assert same(run(prompt="a (red circle"), run(prompt=r"a \(red circle"))


def test_break_changes_the_image(run):
    assert not same(run(prompt="a red circle, blue square"), run(prompt="a red circle BREAK blue square"))


def test_clip_skip(shared_engine, tiny_request):
    one = shared_engine.run(tiny_request)
    two = shared_engine.run(tiny_request.replace(clip_skip=2))
    assert not same(one.images[0], two.images[0])
    assert "Clip skip" not in one.infotexts[0]
    assert "Clip skip: 2" in two.infotexts[0]
    assert parse_infotext(two.infotexts[0]).to_request(Txt2ImgRequest).clip_skip == 2
    with pytest.raises(ValidationError) as err:  # the tiny text encoder has 2 layers
        shared_engine.run(tiny_request.replace(clip_skip=3))
    assert err.value.field == "clip_skip"
    with pytest.raises(ValidationError) as err:
        shared_engine.run(tiny_request.replace(clip_skip=13))
    assert err.value.field == "clip_skip"


def test_engine_token_label(shared_engine):
    # The UI's counter under each prompt box.
    assert shared_engine.token_label("red, (blue:1.2)") == "3/75"
    assert shared_engine.token_label(" ".join(["red"] * 76)) == "76/150"


def test_sampler_grid_takes_the_syntax(shared_engine):
    from backend.grid.runner import GridRequest, GridRunner

    prompt = "a (red:1.6) circle BREAK " + " ".join(["blue square"] * 40)
    request = GridRequest(
        prompt=prompt,
        seed=1234,
        steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        model=TINY,
        samplers=["Euler"],
        steps_list=[2],
    )
    grid = GridRunner(shared_engine).run(request)
    single = shared_engine.run(grid.plan.cells[0]).images[0]
    plain = shared_engine.run(grid.plan.cells[0].replace(prompt="a red circle blue square")).images[0]
    assert np.abs(pixels(grid.images[0]) - pixels(single)).max() <= 1
    assert not same(grid.images[0], plain)
