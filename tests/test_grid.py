"""The sampler grid: axes and labels, cells equal to single txt2img runs, one prompt encoding, errors, endpoint."""

from __future__ import annotations

import dataclasses
import re
import threading

import numpy as np
import pytest
from PIL import Image

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.grid.draw import draw_grid
from backend.grid.plan import GridRequest, plan_grid
from backend.grid.runner import GridRunner
from backend.library.infotext import parse_infotext
from backend.library.outputs import read_infotext

from .conftest import TINY, pixels

LABEL = re.compile(r"^(?P<x>.+) · (?P<y>.+) · \d+\.\d\d s$")


def grid_request(**changes) -> GridRequest:
    values = dict(
        prompt="a red circle on a blue background",
        negative_prompt="blurry",
        seed=1234,
        steps=3,
        guidance_scale=5.0,
        width=64,
        height=64,
        schedule="Automatic",
        model=TINY,
        samplers=["Euler", "DDIM"],
        steps_list=[2, 3],
    )
    return GridRequest(**{**values, **changes})


def max_diff(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def saved_pngs(engine: Engine) -> int:
    root = engine.settings.output_dir
    return len(list(root.rglob("*.png"))) if root.exists() else 0


def test_grid_axes_labels_and_cells_match_single_runs(shared_engine):
    # Ancestral noise (Euler a), integer timesteps (DDIM), a second-order sampler that evaluates about twice per
    # step (Heun) and a multistep one with a Karras schedule, batched together in rows of one step count.
    samplers = ["Euler a", "DDIM", "Heun", "DPM++ 2M Karras"]
    result = GridRunner(shared_engine).run(grid_request(samplers=samplers, steps_list=["3", "2"]))
    assert result.batched
    plan = result.plan
    assert plan.x_labels == samplers and plan.y_labels == ["3 steps", "2 steps"] and plan.y_title == "Steps"
    assert len(result.images) == len(result.labels) == 8
    for k, (cell, label) in enumerate(zip(plan.cells, result.labels, strict=True)):
        row, column = divmod(k, 4)
        assert LABEL.match(label).group("x", "y") == (samplers[column], plan.y_labels[row])
        assert (cell.steps, cell.guidance_scale, cell.seed) == ((3, 2)[row], 5.0, 1234)
        assert f"{result.seconds[k]:.2f} s" in label and result.seconds[k] > 0
    # The grid holds every cell, unchanged, where it says, plus room for the labels.
    grid = result.grid
    assert grid.width > 4 * 64 and grid.height > 2 * 64
    for image, (x, y) in zip(result.images, result.boxes, strict=True):
        assert np.array_equal(pixels(grid.crop((x, y, x + 64, y + 64))), pixels(image))
    # Each cell is the txt2img image for its parameters (batching may move float rounding by 1/255).
    for cell, image, text in zip(plan.cells, result.images, result.infotexts, strict=True):
        single = shared_engine.run(cell)
        assert max_diff(image, single.images[0]) <= 1, (cell.sampler, cell.steps)
        assert text == single.infotext
    assert max_diff(result.images[0], result.images[1]) > 10  # and the samplers do differ


def test_cfg_axis_mixes_guided_and_unguided_cells_and_saves_with_infotexts(shared_engine):
    # A plain name takes the schedule where its sampler supports it; Euler a does not support Karras.
    request = grid_request(samplers=["Euler", "Euler a"], schedule="Karras", steps_list=[], cfg_list="1, 6.5")
    before = saved_pngs(shared_engine)
    result = GridRunner(shared_engine).run(request)
    saved = saved_pngs(shared_engine) - before
    plan = result.plan
    assert plan.x_labels == ["Euler Karras", "Euler a"] and plan.y_labels == ["CFG 1", "CFG 6.5"]
    assert [(c.sampler, c.schedule, c.guidance_scale, c.steps) for c in plan.cells] == [
        ("Euler", "Karras", 1.0, 3),
        ("Euler a", "Automatic", 1.0, 3),
        ("Euler", "Karras", 6.5, 3),
        ("Euler a", "Automatic", 6.5, 3),
    ]
    for cell, image in zip(plan.cells, result.images, strict=True):
        assert max_diff(image, shared_engine.run(cell).images[0]) <= 1, (cell.sampler, cell.guidance_scale)
    # Saved: each cell with its own parameters, and the grid with both axes.
    assert saved == 4 + 1
    for cell, path in zip(plan.cells, result.paths, strict=True):
        with Image.open(path) as saved:
            params = parse_infotext(read_infotext(saved)).params
        assert (params["Sampler"], params["Schedule type"], params["CFG scale"]) == (
            cell.sampler,
            cell.schedule,
            f"{cell.guidance_scale:g}",
        )
    with Image.open(result.grid_path) as saved:
        assert saved.size == result.grid.size
        info = parse_infotext(read_infotext(saved))
    assert info.prompt == request.prompt and info.negative_prompt == "blurry"
    assert info.params["X Type"] == "Sampler" and info.params["X Values"] == "Euler Karras, Euler a"
    assert info.params["Y Type"] == "CFG scale" and info.params["Y Values"] == "1, 6.5"


def test_unbatched_cells_and_batches_of_one_are_identical_to_single_runs(shared_engine):
    one_per_call = GridRunner(shared_engine, batch=False).run(grid_request(samplers=["Euler a", "UniPC"]))
    assert not one_per_call.batched
    alone = GridRunner(shared_engine).run(grid_request(samplers=["DPM2 a"], steps_list=[2, 3]))  # rows of one
    for result in (one_per_call, alone):
        for cell, image in zip(result.plan.cells, result.images, strict=True):
            assert max_diff(image, shared_engine.run(cell).images[0]) == 0, (cell.sampler, cell.steps)


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one-per-call"])
def test_prompt_is_encoded_once_per_grid(shared_engine, batch):
    text_encoder = shared_engine.cache.pipeline(TINY, "txt2img").text_encoder
    calls = []
    hook = text_encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        shared_engine.run(plan_grid(grid_request(), shared_engine).cells[0])
        single = len(calls)
        calls.clear()
        result = GridRunner(shared_engine, batch=batch).run(grid_request(samplers=["Euler", "DDIM", "LMS"]))
    finally:
        hook.remove()
    assert len(result.images) == 6
    assert single == 2  # the prompt and the negative prompt
    assert len(calls) == single  # once for the grid, not once per cell


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"samplers": ["Euler", "Nope"]}, "samplers", "unknown sampler 'Nope'"),
        ({"samplers": []}, "samplers", "pick at least one sampler"),
        ({"samplers": ["DDIM Karras"]}, "samplers", "sampler 'DDIM' does not support schedule 'Karras'"),
        ({"samplers": ["Euler", "Euler Automatic"]}, "samplers", "Euler is listed twice"),
        ({"steps_list": [2, 500]}, "steps_list", "steps must be between 1 and 150, got 500"),
        ({"steps_list": ["2", "abc"]}, "steps_list", "steps must be a whole number, got 'abc'"),
        ({"steps_list": [3, "3"]}, "steps_list", "3 is listed twice"),
        ({"steps_list": []}, "steps_list", r"give step counts \(steps_list\) or CFG scales \(cfg_list\), one of"),
        ({"cfg_list": [4]}, "steps_list", "not both"),
        ({"steps_list": [], "cfg_list": [5, 31]}, "cfg_list", "guidance_scale must be between 0 and 30, got 31"),
        ({"steps": 0, "steps_list": [], "cfg_list": [5]}, "steps", "steps must be between 1"),
        ({"width": 100}, "width", "width 100 is not a multiple of 8"),
        ({"model": "Nope"}, "model", "unknown model 'Nope'"),
        ({"schedule": "Nope"}, "schedule", "unknown schedule type 'Nope'"),
        ({"samplers": ["Euler", "DDIM", "LMS"]}, "grid", "3 samplers × 2 values = 6 cells; the limit is 4"),
    ],
)
def test_bad_axes_fail_before_any_work(settings, changes, field, message):
    from backend.schema.errors import ValidationError

    engine = Engine(dataclasses.replace(settings, grid_max_cells=4))
    with pytest.raises(ValidationError, match=message) as caught:
        GridRunner(engine).run(grid_request(**changes))
    assert caught.value.field == field
    assert engine.cache.resident == []  # no model was even loaded
    assert saved_pngs(engine) == 0


def test_styles_apply_to_every_cell_and_a_sampler_step_limit_is_an_axis_error(shared_engine):
    from backend.schema.errors import ValidationError
    from backend.schema.requests import Txt2ImgRequest

    style = next(iter(shared_engine.presets.styles))
    plan = plan_grid(grid_request(styles=(style,)), shared_engine)
    expected = shared_engine.apply_styles(
        Txt2ImgRequest(prompt=grid_request().prompt, negative_prompt="blurry", styles=(style,))
    )
    assert expected.prompt != grid_request().prompt
    for cell in plan.cells:
        assert (cell.prompt, cell.negative_prompt, cell.styles) == (expected.prompt, expected.negative_prompt, ())
    with pytest.raises(ValidationError, match="LCM cannot run 60 steps") as caught:
        GridRunner(shared_engine).run(grid_request(samplers=["Euler", "LCM"], steps_list=[4, 60]))
    assert caught.value.field == "samplers"


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one-per-call"])
def test_progress_counts_cells_and_steps_over_the_whole_grid(shared_engine, batch):
    events = []
    # Heun evaluates 2 × steps - 1 times: 3 and 5 here; Euler 2 and 3.
    GridRunner(shared_engine, batch=batch).run(grid_request(samplers=["Euler", "Heun"]), on_step=events.append)
    total = 3 + 5 if batch else 2 + 3 + 3 + 5
    assert [(e.step, e.total) for e in events] == [(i, total) for i in range(1, total + 1)]
    if batch:
        assert events[0].desc == "Cells 1–2 of 4, step 1 of 3"
        assert events[-1].desc == "Cells 3–4 of 4, step 5 of 5"
    else:
        assert [e.desc for e in events[:3]] == [f"Cell 1 of 4, step {i} of 2" for i in (1, 2)] + [
            "Cell 2 of 4, step 1 of 3"
        ]
        assert events[-1].desc == "Cell 4 of 4, step 5 of 5"
    assert all(e.preview is not None and e.preview.size == (64, 64) for e in events)
    # Each event carries the cells finished so far: none at first, then each chunk's, in order.
    assert len(events[0].finished) == 0
    finished = [len(e.finished) for e in events]
    assert finished == sorted(finished) and finished[-1] == (2 if batch else 3)


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one-per-call"])
@pytest.mark.parametrize("stop_at", [2, 3], ids=["within-a-cell", "between-cells"])
def test_cancel_within_and_between_cells_saves_nothing(shared_engine, batch, stop_at):
    # Rows of 3 steps: step 3 ends the first batch (batched) or the first cell (one per call).
    request = grid_request(samplers=["Euler", "DDIM"], steps_list=[3, 4])
    cancel = threading.Event()
    seen = []

    def on_step(event):
        seen.append(event.step)
        if event.step == stop_at:
            cancel.set()

    before = saved_pngs(shared_engine)
    with pytest.raises(Cancelled):
        GridRunner(shared_engine, batch=batch).run(request, on_step=on_step, cancel=cancel)
    assert seen == list(range(1, stop_at + 1))
    assert saved_pngs(shared_engine) == before


def test_draw_grid_places_cells_under_their_labels():
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
    images = [Image.new("RGB", (48, 40), color) for color in colors]
    x_labels = ["Euler a", "DPM++ 2M SDE Karras", "DDIM"]
    sheet, boxes = draw_grid(images, x_labels, ["10 steps", "20 steps"], "Sampler", "Steps", ["1.00 s"] * 6)
    assert len(boxes) == 6
    for color, (x, y) in zip(colors, boxes, strict=True):
        assert np.all(pixels(sheet.crop((x, y, x + 48, y + 40))) == color)
    # Columns left to right, rows top to bottom, with the headers above the first row.
    assert boxes[0][0] < boxes[1][0] < boxes[2][0] and boxes[0][1] == boxes[2][1] < boxes[3][1]
    header = pixels(sheet.crop((boxes[1][0], 0, boxes[1][0] + 48, boxes[1][1])))
    assert (header.sum(axis=-1) < 200).any()  # dark text over the second column
    assert sheet.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.api
def test_sampler_grid_endpoint(tmp_path, cache_dir):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from backend.settings import Settings
    from ui.tab_grid import GRID_FIELDS

    from .apphost import serve

    engine = Engine(Settings(offline=True, output_dir=tmp_path / "outputs", cache_dir=cache_dir))
    args = dict(
        prompt="a red circle",
        negative_prompt="blurry",
        seed=77,
        steps=3,
        guidance_scale=5.0,
        width=64,
        height=64,
        schedule="Automatic",
        model=TINY,
        styles=[],
        samplers=["Euler", "DDIM"],
        steps_list="2, 3",
        cfg_list="",
    )
    with serve(engine) as url:
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict")["named_endpoints"]["/sampler_grid"]
        names = [p["parameter_name"] for p in api["parameters"]]
        assert names == [*GRID_FIELDS, "samplers", "steps_list", "cfg_list"]
        assert "sampler" not in names and "batch_size" not in names
        args = {name: value for name, value in args.items() if name in names}
        gallery, infotext, seed, grid_file, labels = client.predict(**args, api_name="/sampler_grid")
        assert seed == 77 and len(gallery) == 4 and len(labels) == 4
        assert [item["caption"] for item in gallery] == labels
        assert LABEL.match(labels[1]).group("x", "y") == ("DDIM", "2 steps")
        assert parse_infotext(infotext).params["Y Values"] == "2, 3"
        with Image.open(grid_file) as grid:
            assert grid.format == "PNG" and "X Values" in read_infotext(grid)
        cell = plan_grid(grid_request(prompt="a red circle", seed=77), engine).cells[1]
        with Image.open(gallery[1]["image"]) as image:
            assert image.format == "PNG"
            assert parse_infotext(read_infotext(image)).params["Sampler"] == "DDIM"
            assert max_diff(image, engine.run(cell).images[0]) <= 1
        with pytest.raises(AppError, match="samplers: unknown sampler 'Nope'"):
            client.predict(**{**args, "samplers": ["Nope"]}, api_name="/sampler_grid")
        with pytest.raises(AppError, match="steps_list: steps must be between 1 and 150, got 999"):
            client.predict(**{**args, "steps_list": "2, 999"}, api_name="/sampler_grid")


def test_a_grid_over_the_work_cap_is_refused_before_any_cell_runs(settings):
    from backend.schema.errors import ValidationError

    engine = Engine(dataclasses.replace(settings, max_pixel_steps=64 * 64 * 20))
    request = GridRequest(prompt="x", width=64, height=64, samplers=["Euler", "DDIM"], steps_list=[4, 5])
    plan_grid(request, engine)  # 18 steps of 64² in all: within 20
    with pytest.raises(ValidationError, match="4 cells of 64×64, 22 steps in all = 90,112 pixel-steps"):
        plan_grid(dataclasses.replace(request, steps_list=[5, 6]), engine)
    # The hires passes count too (each cell alone is within the cap).
    hires = dataclasses.replace(request, enable_hr=True, hr_scale=1.5)
    with pytest.raises(ValidationError, match="and hires passes of 96×96, 18 steps in all = 239,616 pixel-steps"):
        plan_grid(hires, engine)


# --- every option: a grid cell is the txt2img run its infotext describes --------------------------------------

OPTION_PROMPT = "a red circle on a blue background"
HIRES = {"enable_hr": True, "hr_steps": 2, "strength": 0.5}
# GridRequest changes, and whether the batched loop runs such cells (else each is its own txt2img pipeline call).
OPTIONS = {
    "plain": ({}, True),
    "deep-cache-3": ({"deep_cache": 3}, False),
    "skip-cfg-0.5": ({"skip_cfg_after": 0.5}, True),
    "clip-skip-2": ({"clip_skip": 2}, True),
    "lora": ({"prompt": f"{OPTION_PROMPT} <lora:grid-lora:1>"}, True),
    "vae": ({"vae": "grid-vae"}, True),
    "eta-ddim": ({"eta": 0.5, "samplers": ["DDIM"]}, False),  # the batched loop's DDIM step runs eta 0
    "hires": ({**HIRES, "hr_scale": 1.5}, False),  # 64² → 96²
    "hires-latent-128": ({**HIRES, "hr_scale": 2.0, "hr_upscaler": "Latent"}, False),  # 64² → 128²: slow
}
SLOW_OPTIONS = {"hires-latent-128"}
# Per channel, /255. Batching changes the UNet's and the VAE's float rounding, not the noise: measured 1 at most
# here (clip skip, LoRA, VAE) and over every sampler but DPM++ SDE (whose txt2img runs are not reproducible).
BATCH_TOLERANCE = 1


def make_lora(tiny_dir, path) -> None:
    """A random rank-4 LoRA (Kohya's format) for the tiny model's UNet and text encoder attention layers."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    unet_layers, encoder_layers = ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "k_proj", "v_proj", "out_proj"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=unet_layers, init_lora_weights=False))
    encoder = CLIPTextModel.from_pretrained(tiny_dir, subfolder="text_encoder")
    encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=encoder_layers, init_lora_weights=False))
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    state.update({f"text_encoder.text_model.{k}": v for k, v in get_peft_model_state_dict(encoder).items()})
    kohya = convert_state_dict_to_kohya(state)
    save_file({key.replace("lora_te1_", "lora_te_"): value.contiguous() for key, value in kohya.items()}, path)


def make_vae(path) -> None:
    """A VAE file as A1111 ships them (original layout), trained differently: the tiny VAE of another seed."""
    from safetensors.torch import save_file

    from backend.models import tiny

    from .ldm_layout import vae_to_ldm

    vae = tiny.build_components(seed=11)["vae"]
    state = vae_to_ldm(vae.state_dict(), dict(vae.config))
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in state.items()}, path)


@pytest.fixture(scope="module")
def option_engine(tmp_path_factory, cache_dir) -> Engine:
    from backend.settings import Settings

    root = tmp_path_factory.mktemp("grid-options")
    (root / "loras").mkdir()
    (root / "vae").mkdir()
    make_lora(cache_dir / "tiny", root / "loras" / "grid-lora.safetensors")
    make_vae(root / "vae" / "grid-vae.safetensors")
    settings = Settings(
        offline=True,
        output_dir=root / "outputs",
        cache_dir=cache_dir,
        save_outputs=False,
        lora_dirs=str(root / "loras"),
        vae_dir=str(root / "vae"),
    )
    return Engine(settings)


def option_request(**changes) -> GridRequest:
    # Ancestral noise (Euler a) and a multistep sampler (DPM++ 2M), 3 steps: one batch where the loop may batch.
    values = {"prompt": OPTION_PROMPT, "samplers": ["Euler a", "DPM++ 2M"], "steps_list": [3]}
    return grid_request(**{**values, **changes})


@pytest.fixture(scope="module")
def plain_grid(option_engine):
    return GridRunner(option_engine).run(option_request())


@pytest.mark.parametrize(
    "option", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_OPTIONS else []) for name in OPTIONS]
)
def test_every_option_cell_is_the_txt2img_run_its_infotext_describes(option_engine, plain_grid, option):
    from backend.schema.requests import Txt2ImgRequest

    changes, batchable = OPTIONS[option]
    events = []
    result = GridRunner(option_engine).run(option_request(**changes), on_step=events.append)
    assert result.batched == batchable
    # The grid's progress counts every iteration it ran, the hires passes' too.
    assert [(e.step, e.total) for e in events] == [(i, len(events)) for i in range(1, len(events) + 1)]
    for k, (image, text) in enumerate(zip(result.images, result.infotexts, strict=True)):
        request = parse_infotext(text).to_request(Txt2ImgRequest)  # what the cell says it is …
        single = option_engine.run(request)
        assert text == single.infotext
        assert image.size == single.images[0].size
        diff = max_diff(image, single.images[0])  # … is what it is: that txt2img run's picture
        assert diff <= (BATCH_TOLERANCE if batchable else 0), (option, request.sampler, diff)
        if option != "plain" and image.size == plain_grid.images[k].size:
            # The option did something (how much is its own tests' business: skip CFG moves the tiny model little).
            assert max_diff(image, plain_grid.images[k]) > 0, (option, request.sampler)
    if changes.get("enable_hr"):
        assert result.images[0].size == parse_infotext(result.infotexts[0]).to_request(Txt2ImgRequest).hires_size()


def test_a_grid_request_carries_every_txt2img_option():
    """Every Txt2ImgRequest field but the X axis and the batch size is a grid field, with the same default, and
    reaches every cell: a new txt2img option fails here until the grid takes it."""
    from backend.grid.plan import CELL_FIELDS
    from backend.schema.requests import Txt2ImgRequest

    txt2img = {f.name: f for f in dataclasses.fields(Txt2ImgRequest)}
    grid = {f.name: f for f in dataclasses.fields(GridRequest)}
    assert set(txt2img) - set(grid) == {"sampler", "batch_size"}
    assert set(grid) - set(txt2img) == {"samplers", "steps_list", "cfg_list"}
    assert set(CELL_FIELDS) == set(grid) & set(txt2img)
    defaults = Txt2ImgRequest()
    assert all(getattr(GridRequest(), name) == getattr(defaults, name) for name in CELL_FIELDS)


def test_the_options_the_batched_loop_does_not_implement_are_named(shared_engine):
    from backend.grid.batch import unbatched_options

    plan = plan_grid(grid_request(deep_cache=2, hr_scale=1.5, clip_skip=2, skip_cfg_after=0.5), shared_engine)
    assert unbatched_options(plan.cells[0]) == ["deep_cache"]  # hires settings count only with the hires fix on
    assert unbatched_options(plan.cells[0].replace(deep_cache=1, enable_hr=True)) == ["enable_hr"]
    assert unbatched_options(plan.cells[0].replace(deep_cache=1)) == []
