"""The UI is derived from the request schema: controls, handler signatures and inputs follow the fields' specs.

No browser and no server: the tabs are built into a Blocks and read back.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import gradio as gr
import pytest

from backend.generation.engine import Engine
from backend.schema.catalog import common_fields
from backend.schema.fields import Limit, field_default, field_spec, spec
from backend.schema.ip_adapter import IP_ADAPTER_FIELDS
from backend.schema.requests import REQUEST_CLASSES, GenerationRequest, Txt2ImgRequest, field_limits
from backend.settings import Settings
from ui import common, tab_grid, tab_img2img, tab_txt2img
from ui.handlers import input_names
from ui.presets_ui import own_preset_storage
from ui.session import CancelRegistry
from ui.studio import Studio

HIRES = ("enable_hr", "hr_upscaler", "hr_scale", "hr_steps", "strength")
IP = tuple(IP_ADAPTER_FIELDS)  # the IP-Adapter accordion's fields follow (ui/ip_adapter.py)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    folder = tmp_path_factory.mktemp("ui-schema")
    return Engine(Settings(offline=True, output_dir=folder / "out", cache_dir=folder / "cache"))


def build(engine: Engine, module) -> tuple[gr.Blocks, object]:
    with gr.Blocks() as demo:
        studio = Studio(engine=engine, cancels=CancelRegistry(), preset_storage=own_preset_storage())
        handle = module.build_tab(studio)
    return demo, handle


def event_fn(demo: gr.Blocks, api_name: str):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


@pytest.mark.parametrize("module", [tab_txt2img, tab_img2img, tab_grid], ids=lambda m: m.__name__)
def test_common_controls_have_the_schema_words_and_limits(engine, module):
    _, handle = build(engine, module)
    limits = field_limits(engine.settings)
    controls = handle.controls
    assert tuple(controls.components) == common_fields()
    for name, control in controls.components.items():
        meta = field_spec(GenerationRequest, name)
        assert control.label.startswith(meta.label), name  # width/height may add " (0 = from image)"
        assert (control.info or "") == meta.info, name
        # The seed is a number box without a range: the validator's refusal says the range ("seed must be between…").
        if name in limits and name != "seed":
            low = 0 if name in ("width", "height") and controls.size_from_image else limits[name].minimum
            assert (control.minimum, control.maximum, control.step) == (low, limits[name].maximum, limits[name].step)


def test_txt2img_handler_is_the_common_fields_then_the_hires_fields(engine):
    demo, handle = build(engine, tab_txt2img)
    fn = event_fn(demo, "txt2img")
    parameters = inspect.signature(fn.fn).parameters
    assert input_names(fn.fn) == [*common_fields(), *HIRES, *IP]
    assert [parameters[name].default for name in HIRES] == [field_default(Txt2ImgRequest, name) for name in HIRES]
    assert all(parameters[name].default is inspect.Parameter.empty for name in common_fields())
    # Gradio fills these two in itself (by annotation and by default), and streams from a generator function.
    assert parameters["request"].annotation is gr.Request and isinstance(parameters["progress"].default, gr.Progress)
    assert inspect.isgeneratorfunction(fn.fn) and fn.fn.__name__ == "txt2img" and "Generate images" in fn.fn.__doc__
    # Each parameter gets its own control as input, in the signature's order.
    # (The reference pictures last: Send does not set them, an infotext cannot hold them.)
    assert fn.inputs == [*handle.controls.inputs(), *handle.fields.values(), fn.inputs[-1]]
    assert fn.inputs[-1].elem_id == "txt2img-ip-adapter-image"


def test_img2img_picture_is_required_and_grid_leaves_out_its_axis_fields(engine):
    demo, _ = build(engine, tab_img2img)
    parameters = inspect.signature(event_fn(demo, "img2img").fn).parameters
    assert list(parameters)[len(common_fields()) :] == ["image", "strength", "resize_mode", *IP, "request", "progress"]
    assert parameters["image"].default is inspect.Parameter.empty  # no default: API clients must send a picture
    demo, _ = build(engine, tab_grid)
    names = input_names(event_fn(demo, "sampler_grid").fn)
    assert names == [
        *(n for n in common_fields() if n not in ("sampler", "batch_size")),
        "samplers",
        "steps_list",
        "cfg_list",
    ]


@dataclass
class Tiled(GenerationRequest):
    tile: int = spec(1, label="Tiles", info="How often the picture repeats.", limit=lambda s: Limit(1, 4), common=True)


def test_a_new_common_field_reaches_the_ui_without_a_ui_edit(engine, monkeypatch):
    """A field declared common in the schema gets a control (its words and range from the schema) and a parameter
    in every tab's handler, wired to that control: no UI file names it."""
    added = Tiled.__dataclass_fields__["tile"]
    for cls in (GenerationRequest, *REQUEST_CLASSES):
        monkeypatch.setitem(cls.__dataclass_fields__, "tile", added)
    monkeypatch.setattr(common, "COMMON_FIELDS", common_fields())
    assert common_fields()[-1] == "tile"
    demo, handle = build(engine, tab_txt2img)
    control = handle.controls["tile"]
    described = (control.label, control.info, control.minimum, control.maximum, control.value)
    assert described == ("Tiles", "How often the picture repeats.", 1, 4, 1)
    fn = event_fn(demo, "txt2img")
    assert input_names(fn.fn) == [*common_fields(), *HIRES, *IP]
    assert fn.inputs[len(common_fields()) - 1] is control


def test_choosing_a_flux_model_offers_its_samplers(shared_engine):
    """The model menu's change gives the sampler menus of the model's family: FLUX runs flow-matching samplers, so
    the SD default DPM++ 2M Karras becomes DPM++ 2M with the model's own schedule, and SD's Euler a is not offered."""
    from ui.schedule import sampler_dropdowns, sampler_table

    table = sampler_table(shared_engine, "Tiny FLUX (offline test model)")
    sampler, schedule = sampler_dropdowns(table, "DPM++ 2M", "Karras")
    assert "Euler a" not in [value for _, value in sampler.choices] and sampler.value == "DPM++ 2M"
    assert schedule.value == "Automatic"
    sampler, _ = sampler_dropdowns(table, "Euler a", "Automatic")
    assert sampler.value == "Euler"
    back = sampler_dropdowns(sampler_table(shared_engine, "Tiny (offline test model)"), "Euler", "Karras")
    assert "Euler a" in [value for _, value in back[0].choices] and back[1].value == "Karras"


def test_the_page_shows_only_the_options_a_family_honours(shared_engine):
    """DeepCache, skip CFG and eta are controls on SD models; FLUX refuses the first two and ignores eta, so the page
    hides them when a FLUX model is chosen (ui/common.py's model event) instead of showing controls that do nothing."""
    from ui.common import family_options

    assert family_options(shared_engine, "Tiny (offline test model)") == {
        "skip_cfg_after": True,
        "deep_cache": True,
        "dit_cache": False,
        "eta": True,
        "distilled_cfg_scale": False,
        "text_encoders": False,  # a model with its own text encoders (only single DiT files take files)
    }
    flux = family_options(shared_engine, "Tiny FLUX (offline test model)")
    assert flux == {
        "skip_cfg_after": False,
        "deep_cache": False,
        "dit_cache": True,
        "eta": False,
        "distilled_cfg_scale": True,
        "text_encoders": False,  # a folder model: its own
    }


def test_the_grid_offers_the_model_familys_samplers(shared_engine):
    from ui.tab_grid import family_samplers

    flux = family_samplers(shared_engine, "Tiny FLUX (offline test model)", ["Euler a", "Euler", "DPM++ 2M Karras"])
    offered = [value for _, value in flux.choices]
    assert "Euler a" not in offered and "Euler Karras" in offered and flux.value == ["Euler"]
    sd = family_samplers(shared_engine, "Tiny (offline test model)", ["Euler"])
    assert "Euler a" in [value for _, value in sd.choices] and sd.value == ["Euler"]
