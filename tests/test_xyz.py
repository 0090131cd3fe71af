"""The X/Y/Z plot: A1111's axis values parsed, cells planned and checked, run batched, each cell its infotext."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from backend.generation.engine import Engine
from backend.grid.axes import AXES, parse_values, split_csv
from backend.grid.xyz import XYZRequest, plan_xyz
from backend.grid.xyz_runner import XYZRunner
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings
from training.data import classify_picture

from .conftest import TINY, pixels

DEMO = "Demo shapes (offline)"


def xyz(**changes) -> XYZRequest:
    values = dict(prompt="a red circle", negative_prompt="blurry", seed=21, steps=3, guidance_scale=5.0, width=64,
                  height=64, sampler="Euler", schedule="Automatic", model=TINY, save=False, x_values="21")
    return XYZRequest(**{**values, **changes})


def max_diff(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.mark.parametrize(
    "axis, text, expected",
    [
        ("Steps", "1-5", [1, 2, 3, 4, 5]),
        ("Steps", "1-10 (+2)", [1, 3, 5, 7, 9]),
        ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),  # A1111: linspace, truncated to integers
        ("Steps", "10-1 (-3)", [10, 7, 4, 1]),
        ("Steps", "5, 1-3, 20", [5, 1, 2, 3, 20]),
        ("Seed", "-1--3 (-1), 7", [-1, -2, -3, 7]),
        ("Clip skip", " 1 - 2 ", [1, 2]),
        ("CFG Scale", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
        ("CFG Scale", "1-3 [5]", [1.0, 1.5, 2.0, 2.5, 3.0]),
        ("CFG Scale", "7, 8.5, .5", [7.0, 8.5, 0.5]),
        ("Denoising", "0.2-0.6 (+0.2)", [0.2, 0.4, 0.6]),
        ("Prompt S/R", 'red, green, "blue, dark"', ["red", "green", "blue, dark"]),
        ("Sampler", "Euler a, DPM++ 2M Karras", ["Euler a", "DPM++ 2M Karras"]),
        ("Steps", [3, "4"], [3, 4]),  # a list from Python
        ("Nothing", "ignored", []),
    ],
)
def test_values_parse_as_a1111_parses_them(axis, text, expected):
    assert parse_values(axis, text, "x_values") == expected


@pytest.mark.parametrize(
    "axis, text, message",
    [
        ("Steps", "ten", "Y axis \\(Steps\\): 'ten' is not a value"),
        ("Steps", "1.5", "'1.5' is not a value; give whole numbers"),
        ("CFG Scale", "1-5 (+0)", "'1-5 \\(\\+0\\)' is not a value"),
        ("CFG Scale", "", "Y axis \\(CFG Scale\\): give its values"),
        ("Steps", "1-3 [0]", "is not a value"),
    ],
)
def test_bad_values_name_the_axis_and_what_to_write(axis, text, message):
    with pytest.raises(ValidationError, match=message) as err:
        parse_values(axis, text, "y_values")
    assert err.value.field == "y_values"


def test_axis_types_and_csv():
    assert list(AXES)[:3] == ["Nothing", "Seed", "Steps"] and "Distilled CFG Scale" in AXES
    assert split_csv(' a ,"b, c",, d') == ["a", "b, c", "d"]
    with pytest.raises(ValidationError, match="unknown axis type 'Colour'") as err:
        parse_values("Colour", "1", "z_values")
    assert err.value.field == "z_type"
    assert parse_values("cfg scale", "3", "x_values") == [3.0]  # case forgiven


def test_plan_orders_cells_and_refuses_with_the_axis_named(shared_engine):
    plan = plan_xyz(xyz(x_type="Steps", x_values="2-3", y_type="Sampler", y_values="Euler, DDIM",
                        z_type="CFG Scale", z_values="3, 6"), shared_engine)
    assert (plan.columns, plan.rows, len(plan.cells)) == (2, 2, 8)
    assert [(c.steps, c.sampler, c.guidance_scale) for c in plan.cells[:4]] == [
        (2, "Euler", 3.0), (3, "Euler", 3.0), (2, "DDIM", 3.0), (3, "DDIM", 3.0)
    ]
    assert plan.cells[7].guidance_scale == 6.0 and plan.where(7) == (1, 1, 1)
    assert {c.seed for c in plan.cells} == {21}
    sr = plan_xyz(xyz(x_type="Prompt S/R", x_values="red, green"), shared_engine)
    assert [(c.prompt, c.negative_prompt) for c in sr.cells] == [("a red circle", "blurry")] * 1 + [
        ("a green circle", "blurry")
    ]
    assert sr.axes[1].labels == [""] and sr.rows == 1  # Y is Nothing
    bad = [
        (dict(x_type="Steps", x_values="2, 999"), "x_values", "X axis \\(Steps\\): steps must be between 1 and 150"),
        (dict(y_type="Prompt S/R", y_values="blue, green"), "y_values", "'blue' is not in the prompt"),
        (dict(z_type="Denoising", z_values="0.5"), "z_values", "tick Hires. fix"),
        (dict(x_type="Sampler", x_values="Nope"), "x_values", "X axis \\(Sampler\\): unknown sampler 'Nope'"),
        (dict(x_type="Checkpoint name", x_values="Nope"), "x_values", "X axis \\(Checkpoint name\\): unknown model"),
        (dict(x_type="Distilled CFG Scale", x_values="3.5"), "x_type", "SD 1.x models do not use it"),
        (dict(x_type="Steps", x_values="2", y_type="Steps", y_values="3"), "y_type", "each axis type may be used once"),
        (dict(x_type="Seed", x_values="1-65"), "x_values", "65 × 1 × 1 = 65 cells; the limit is 64"),
        (dict(x_type="VAE", x_values="Automatic, nope.safetensors"), "x_values", "X axis \\(VAE\\)"),
    ]
    for changes, field, message in bad:
        with pytest.raises(ValidationError, match=message) as err:
            plan_xyz(xyz(**changes), shared_engine)
        assert err.value.field == field, changes


def test_a_plot_runs_batched_and_each_cell_is_its_infotext(shared_engine):
    events = []
    request = xyz(x_type="Steps", x_values="2-3", y_type="Sampler", y_values="Euler, DDIM", z_type="Seed",
                  z_values="21, 22")
    result = XYZRunner(shared_engine).run(request, on_step=events.append)
    assert result.batched and len(result.images) == 8 and len(result.grids) == 2 and events
    assert result.labels[5].startswith("3 · Euler · 22 · ") and result.labels[5].endswith(" s")
    info = parse_infotext(result.infotext).params
    assert (info["X Type"], info["X Values"], info["Y Values"], info["Z Values"]) == (
        "Steps", "2, 3", "Euler, DDIM", "21, 22"
    )
    assert result.grids[0].width > 2 * 64 and result.grids[1].info["parameters"] == result.infotext
    assert max_diff(result.images[0], result.images[4]) > 10  # the seeds differ
    for k in (0, 7):  # PNG info → a txt2img run: the cell's picture, batching moving float rounding by 2/255
        alone = shared_engine.run(parse_infotext(result.infotexts[k]).to_request(Txt2ImgRequest, save=False))
        assert alone.infotexts[0] == result.infotexts[k]
        assert max_diff(result.images[k], alone.images[0]) <= 2, k
    assert all(s > 0 for s in result.seconds)
    # A cell run on its own (not batched) is exactly its txt2img run.
    single = XYZRunner(shared_engine, batch=False).run(xyz(x_type="Sampler", x_values="DDIM", seed=22))
    alone = shared_engine.run(parse_infotext(single.infotexts[0]).to_request(Txt2ImgRequest, save=False))
    assert not single.batched and max_diff(single.images[0], alone.images[0]) == 0


def test_checkpoint_axis_runs_each_model(two_model_registry, settings):
    engine = Engine(dataclasses.replace(settings, default_model="Tiny A", max_models=2), registry=two_model_registry)
    names = ["Tiny A", "Tiny B"]
    result = XYZRunner(engine).run(xyz(model="Tiny A", steps=2, x_type="Checkpoint name", x_values="Tiny A, Tiny B"))
    assert [parse_infotext(t).params["Model"] for t in result.infotexts] == names


@pytest.mark.api
def test_xyz_plot_endpoint(shared_engine):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from ui.tab_xyz import XYZ_FIELDS

    from .apphost import serve
    from .conftest import endpoint_args

    with serve(shared_engine) as url:
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict")["named_endpoints"]["/xyz_plot"]
        names = [p["parameter_name"] for p in api["parameters"]]
        assert names == [*XYZ_FIELDS, "x_type", "x_values", "y_type", "y_values", "z_type", "z_values"]
        args = {k: v for k, v in endpoint_args(steps=2).items() if k in names}
        gallery, infotext, seed, sheets, labels = client.predict(
            **args, x_type="CFG Scale", x_values="3, 6", y_type="Nothing", y_values="", z_type="Nothing",
            z_values="", api_name="/xyz_plot"
        )
        assert seed == 5 and len(gallery) == 2 and labels[1].startswith("6 · ") and len(sheets) == 1
        assert parse_infotext(infotext).params["X Values"] == "3, 6"
        with Image.open(gallery[1]["image"]) as image:
            assert parse_infotext(read_infotext(image)).params["CFG scale"] == "6"
        with pytest.raises(AppError, match="x_values: X axis \\(CFG Scale\\): 'lots' is not a value"):
            client.predict(**args, x_type="CFG Scale", x_values="lots", api_name="/xyz_plot")


def test_prompt_sr_red_green_draws_red_then_green_on_the_demo_model(tmp_path):
    engine = Engine(Settings(offline=True, output_dir=tmp_path, save_outputs=False))
    request = xyz(model=DEMO, prompt="a red circle on a white background", negative_prompt="", steps=16,
                  guidance_scale=6.0, sampler="DPM++ 2M", x_type="Prompt S/R", x_values="red, green",
                  y_type="Seed", y_values="11, 12")
    result = XYZRunner(engine).run(request)
    colours = [classify_picture(image)["colour"] for image in result.images]
    assert colours[0::2].count("red") >= 1 and colours[1::2].count("green") >= 1, colours
    assert sum(c == w for c, w in zip(colours, ["red", "green"] * 2, strict=True)) >= 3, colours
