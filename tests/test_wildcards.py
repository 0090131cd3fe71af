"""Dynamic prompts: {a|b}, {2$$a|b|c} and __wildcards__ resolved per picture, seeded, in every entry point."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backend.generation.engine import Engine
from backend.generation.wildcards import is_dynamic, resolve_prompts
from backend.grid.plan import GridRequest
from backend.grid.runner import GridRunner
from backend.library.infotext import parse_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings
from training.data import classify_picture

from .conftest import TINY, pixels

DEMO = "Demo shapes (offline)"


@pytest.fixture(scope="module")
def wildcards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wildcards")
    (folder / "colour.txt").write_text("red\ngreen\nblue\n# a comment line is not a value\n")
    (folder / "only_green.txt").write_text("green\n")
    (folder / "shapes").mkdir()
    (folder / "shapes" / "round.txt").write_text("circle\n")
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir, wildcards) -> Engine:
    out = tmp_path_factory.mktemp("wildcard-out")
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, wildcards_dir=wildcards))


def resolve(text: str, seeds, combinatorial: bool = False, folder: Path = Path("."), negative: str = "") -> list[str]:
    return [r.prompt for r in resolve_prompts(text, negative, seeds, combinatorial, folder)]


def test_what_is_dynamic_and_plain_prompts_are_untouched(wildcards):
    assert is_dynamic("a {red|green} cat") and is_dynamic("a __colour__ cat") and is_dynamic("__shapes/round__")
    for plain in ("a (red:1.2) [cat] <lora:x:0.5>", "[dog:cat:10] BREAK snake_case_word", "a __ b"):
        assert not is_dynamic(plain)
        assert resolve(plain, [1, 2], folder=wildcards) == [plain, plain]
        assert resolve_prompts(plain, "", [1], False, wildcards)[0].templates == {}


def test_random_mode_is_seeded_by_each_pictures_seed(wildcards):
    template = "a {red|green|blue|yellow|white} {circle|square|cross}"
    first = resolve(template, range(40), folder=wildcards)
    assert first == resolve(template, range(40), folder=wildcards)  # same seeds, same prompts
    assert len(set(first)) > 5  # different seeds draw differently
    assert resolve(template, [7], folder=wildcards)[0] == first[7]  # a picture's prompt depends on its seed alone
    # {2$$a|b|c}: two different choices, joined as the extension joins them.
    for prompt in resolve("{2$$red|green|blue}", range(20), folder=wildcards):
        parts = prompt.split(",")
        assert len(parts) == 2 and len(set(parts)) == 2 and set(parts) <= {"red", "green", "blue"}


def test_wildcard_files_nested_folders_and_negative_template(wildcards):
    drawn = resolve("a __colour__ __shapes/round__", range(30), folder=wildcards)
    assert {p.split()[1] for p in drawn} == {"red", "green", "blue"} and all(p.endswith(" circle") for p in drawn)
    (one,) = resolve_prompts("a __only_green__ x", "{blurry|dark}", [3], False, wildcards)
    assert one.prompt == "a green x" and one.negative_prompt in ("blurry", "dark")
    assert one.templates == {"Template": "a __only_green__ x", "Negative Template": "{blurry|dark}"}


def test_combinatorial_mode_takes_every_combination_in_turn(wildcards):
    prompts = resolve("a {red|green} {circle|square}", range(6), combinatorial=True, folder=wildcards)
    assert len(set(prompts[:4])) == 4 and prompts[4:] == prompts[:2]  # all four, then again from the start


def test_bad_syntax_and_missing_wildcards_name_the_prompt(wildcards):
    with pytest.raises(ValidationError, match="no wildcard file for __nope__") as err:
        resolve("a __nope__", [1], folder=wildcards)
    assert err.value.field == "prompt"
    with pytest.raises(ValidationError, match="does not parse") as err:
        resolve_prompts("fine", "a {b|c", [1], False, wildcards)
    assert err.value.field == "negative_prompt"


def test_a_batch_resolves_per_picture_and_each_infotext_reproduces_its_picture(engine):
    request = Txt2ImgRequest(
        prompt="a {red|green|blue} __shapes/round__", seed=40, steps=2, width=64, height=64, model=TINY, batch_size=3,
        sampler="Euler", schedule="Automatic", save=False,
    )
    result = engine.run(request)
    assert result.seeds == [40, 41, 42] and len(result.images) == 3
    expected = resolve_prompts(request.prompt, "", result.seeds, False, engine.settings.wildcards_dir)
    assert len({p.prompt for p in expected}) > 1  # these seeds draw different colours
    for image, text, picture in zip(result.images, result.infotexts, expected, strict=True):
        info = parse_infotext(text)
        assert info.prompt == picture.prompt and "{" not in info.prompt
        assert info.params["Template"] == request.prompt and "Negative Template" not in info.params
        # PNG info → the same picture (the resolved prompt, the picture's own seed); pictures that shared a prompt
        # ran as one batch, which may move float rounding by 1/255.
        again = engine.run(info.to_request(Txt2ImgRequest, save=False))
        assert int(np.abs(pixels(again.images[0]) - pixels(image)).max()) <= 1
        assert again.infotext.split("\n")[0] == info.prompt and "Template" not in again.infotext


def test_combinatorial_batch_and_the_sampler_grid(engine):
    base = Txt2ImgRequest(prompt="a {red|green} circle", seed=5, steps=2, width=64, height=64, model=TINY, save=False)
    result = engine.run(base.replace(batch_size=3, combinatorial_prompts=True))
    prompts = [parse_infotext(t).prompt for t in result.infotexts]
    assert prompts == ["a red circle", "a green circle", "a red circle"]
    grid = GridRunner(engine).run(
        GridRequest(prompt="a __only_green__ {circle|square}", seed=5, steps=2, width=64, height=64, model=TINY,
                    samplers=["Euler"], steps_list=[2], save=False)
    )
    info = parse_infotext(grid.infotexts[0])
    assert info.prompt.startswith("a green ") and info.params["Template"] == "a __only_green__ {circle|square}"
    assert grid.plan.cells[0].prompt == info.prompt


@pytest.mark.api
def test_both_apis_take_wildcards(engine):
    import webuiapi
    from gradio_client import Client

    from .apphost import serve
    from .conftest import endpoint_args

    with serve(engine, api=True) as url:
        gallery, infotext, seed = Client(url, verbose=False).predict(
            **endpoint_args(prompt="a __only_green__ circle", combinatorial_prompts=False), api_name="/txt2img"
        )
        assert infotext.startswith("a green circle\n") and "Template: a __only_green__ circle" in infotext
        api = webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")
        result = api.txt2img(
            prompt="a {__only_green__|__only_green__} square", seed=3, steps=2, width=64, height=64,
            override_settings={"sd_model_checkpoint": TINY},
        )
        assert result.info["infotexts"][0].startswith("a green square\n")
        assert "Template: a {__only_green__|__only_green__} square" in result.info["infotexts"][0]


def test_a_one_colour_wildcard_draws_that_colour_on_the_demo_model(engine, wildcards):
    demo = Engine(dataclasses.replace(engine.settings, save_outputs=False))
    hits = 0
    for seed in (11, 12, 13):
        request = Txt2ImgRequest(
            prompt="a __only_green__ {circle|square} on a {white|black} background", seed=seed, steps=16,
            guidance_scale=6.0, width=64, height=64, model=DEMO, sampler="DPM++ 2M", schedule="Automatic", save=False,
        )
        result = demo.run(request)
        hits += classify_picture(result.images[0])["colour"] == "green"
        assert "Template: a __only_green__" in result.infotexts[0]
    assert hits >= 2, hits
