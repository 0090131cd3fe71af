"""ControlNet: preprocessors, attaching ControlNets to the loaded model, and what each control does.

The tiny model's ControlNets are built from its UNet (``ControlNetModel.from_unet``), saved and loaded back
through the app's loading code; the depth and pose annotators have random weights in controlnet_aux's file
layout and are loaded from a local folder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, MultiControlNetModel
from PIL import Image, ImageDraw

from backend.generation.engine import Engine
from backend.images.annotators import Annotators, AnnotatorUnavailable, PreprocessError
from backend.library.infotext import parse_infotext
from backend.models import pipelines
from backend.models.devices import DevicePlan
from backend.models.loaders import ModelUnavailable
from backend.models.pipelines import load_controlnet
from backend.models.registry import ModelRegistry
from backend.schema.errors import ValidationError
from backend.schema.requests import ControlNetRequest, ControlUnit, Txt2ImgRequest
from backend.settings import Settings

from .annotator_weights import write_annotators
from .conftest import TINY, pixels, write_registry


@pytest.fixture(scope="module")
def annotator_dir(tmp_path_factory):
    return write_annotators(tmp_path_factory.mktemp("annotators"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir, annotator_dir) -> Engine:
    out = tmp_path_factory.mktemp("cn-out")
    return Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, annotators=str(annotator_dir)))


@pytest.fixture(scope="module")
def square() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle([16, 16, 47, 47], fill="white")
    return image


@pytest.fixture(scope="module")
def circle() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse([8, 20, 40, 52], fill="white")
    return image


def cn_request(image, *units: ControlUnit, **fields) -> ControlNetRequest:
    values = dict(
        prompt="a red circle on a blue background",
        seed=5,
        steps=4,
        guidance_scale=5.0,
        sampler="Euler",
        schedule="Automatic",
        model=TINY,
        units=units or (ControlUnit(image=image),),
    )
    return ControlNetRequest(**(values | fields))


def run(engine: Engine, request) -> np.ndarray:
    return pixels(engine.run(request).images[0])


# Preprocessors


def test_canny_map_responds_to_thresholds(engine, test_image):
    def edges(low: int, high: int) -> int:
        unit = ControlUnit(low_threshold=low, high_threshold=high)
        edge_map = engine.annotators.control_map("canny", test_image, (96, 64), unit, "Just resize")
        assert edge_map.size == (96, 64)
        return int((np.asarray(edge_map.convert("L")) > 127).sum())

    # Low thresholds keep the gradients' weak edges; high ones only the red block's outline.
    assert edges(1, 5) > 2 * edges(200, 255) > 0


def test_depth_and_pose_annotators_load_once_from_a_local_folder(engine, test_image):
    for control_type in ("depth", "pose"):
        unit = ControlUnit(detect_resolution=64)
        control_map = engine.annotators.control_map(control_type, test_image, (96, 64), unit, "Just resize")
        assert control_map.size == (96, 64) and control_map.mode == "RGB"
        assert engine.annotators.detector(control_type) is engine.annotators.detector(control_type)
    # Random weights: the depth map is not blank, so the detector really ran on the picture.
    depth = engine.annotators.control_map("depth", test_image, (96, 64), ControlUnit(), "Just resize")
    assert np.asarray(depth).std() > 0


def test_each_option_reaches_its_detector(engine, test_image, monkeypatch):
    calls: list[dict] = []

    def recording(picture, **kwargs):
        calls.append(kwargs)
        return picture

    for control_type in ("canny", "pose"):
        monkeypatch.setitem(engine.annotators._loaded, control_type, recording)
    unit = ControlUnit(low_threshold=11, high_threshold=22, detect_resolution=128, pose_hands=True, pose_face=True)
    engine.annotators.control_map("canny", test_image, (96, 64), unit, "Just resize")
    engine.annotators.control_map("pose", test_image, (96, 64), unit.replace(pose_body=False), "Just resize")
    engine.annotators.control_map("pose", test_image, (96, 64), unit.replace(detect_resolution=0), "Just resize")
    assert calls[0] | {"output_type": None} == {
        "low_threshold": 11,
        "high_threshold": 22,
        "detect_resolution": 128,
        "image_resolution": 128,
        "output_type": None,
    }
    assert (calls[1]["include_body"], calls[1]["include_hand"], calls[1]["include_face"]) == (False, True, True)
    assert calls[2]["detect_resolution"] == 64  # 0 = the output's short side


def test_detect_resolution_changes_the_canny_map(engine, test_image):
    def edge_map(resolution: int) -> np.ndarray:
        unit = ControlUnit(detect_resolution=resolution, low_threshold=50, high_threshold=100)
        return pixels(engine.annotators.control_map("canny", test_image, (96, 64), unit, "Just resize"))

    assert np.abs(edge_map(64) - edge_map(256)).mean() > 1


def test_missing_annotator_files_are_named(tmp_path, cache_dir, test_image):
    (tmp_path / "body_pose_model.pth").write_bytes(b"")
    settings = Settings(offline=True, cache_dir=cache_dir, annotators=str(tmp_path))
    annotators = Annotators(settings, Engine(settings).cache.plan)
    with pytest.raises(AnnotatorUnavailable, match="hand_pose_model.pth, facenet.pth"):
        annotators.detector("pose")
    # Canny needs no weights, so it works with the same settings.
    assert annotators.control_map("canny", test_image, (64, 64), ControlUnit(), "Just resize").size == (64, 64)


def test_annotators_offline_without_cache_say_how_to_fix(cache_dir):
    settings = Settings(offline=True, cache_dir=cache_dir, annotators="nobody/no-such-annotators")
    annotators = Annotators(settings, Engine(settings).cache.plan)
    with pytest.raises(AnnotatorUnavailable, match="--annotators FOLDER"):
        annotators.detector("depth")


def test_map_lines_up_with_the_picture(engine):
    """controlnet_aux works at sizes rounded to 64 (96x64 → 128x64); the map must still match the picture."""
    picture = Image.new("RGB", (96, 64), "black")
    ImageDraw.Draw(picture).rectangle([24, 16, 71, 47], fill="white")
    for mode in ("Crop and resize", "Just resize"):
        (control_map,) = engine.control_maps(cn_request(picture, resize_mode=mode))
        row = np.asarray(control_map.convert("L"))[32]
        columns = np.nonzero(row > 0)[0]
        assert abs(columns.min() - 24) <= 1 and abs(columns.max() - 71) <= 1, (mode, columns)


def test_resize_and_fill_pads_maps_with_black(engine):
    wide = Image.new("RGB", (128, 64), "white")
    request = cn_request(wide, ControlUnit(image=wide, preprocessor="none"), width=64, height=64)
    (control_map,) = engine.control_maps(request.replace(resize_mode="Resize and fill"))
    rgb = pixels(control_map)
    assert rgb[:10].max() == 0 and rgb[-10:].max() == 0 and rgb[28:36].min() == 255


def test_a_failing_detector_gives_a_message(engine, square, monkeypatch):
    def broken(picture, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setitem(engine.annotators._loaded, "canny", broken)
    with pytest.raises(PreprocessError, match="the canny preprocessor failed on this picture .*out of memory"):
        engine.control_maps(cn_request(square))


def test_preprocessor_none_uses_the_picture_as_the_map(engine, circle):
    request = cn_request(circle, ControlUnit(image=circle, preprocessor="none"), width=64, height=64)
    (control_map,) = engine.control_maps(request)
    assert np.array_equal(pixels(control_map), pixels(circle))


# The ControlNet steers the picture


def test_control_map_changes_the_output(engine, square, circle):
    none = ControlUnit(preprocessor="none")
    a = run(engine, cn_request(square, none.replace(image=square)))
    again = run(engine, cn_request(square, none.replace(image=square)))
    b = run(engine, cn_request(circle, none.replace(image=circle)))
    assert np.array_equal(a, again)
    assert np.abs(a - b).mean() > 1


def test_conditioning_scale_zero_equals_no_controlnet(engine, square):
    with_zero = run(engine, cn_request(square, ControlUnit(image=square, conditioning_scale=0.0)))
    plain = run(engine, Txt2ImgRequest(**_common_fields(cn_request(square)), width=64, height=64))
    full = run(engine, cn_request(square))
    assert np.array_equal(with_zero, plain)
    assert np.abs(full - plain).mean() > 1


def _common_fields(request: ControlNetRequest) -> dict:
    names = ("prompt", "seed", "steps", "guidance_scale", "sampler", "schedule", "model")
    return {name: getattr(request, name) for name in names}


def test_guidance_start_end_limit_the_steps_the_controlnet_runs(engine, square):
    controlnet = engine.cache.controlnet(TINY, "canny")
    scales: list[float] = []  # the weight diffusers asks for at each step
    computed: list[int] = []  # the steps where the ControlNet really computed (its map encoder ran)

    def record(module, args, kwargs):
        scales.append(float(kwargs["conditioning_scale"]))

    hooks = [
        controlnet.register_forward_pre_hook(record, with_kwargs=True),
        controlnet.controlnet_cond_embedding.register_forward_hook(lambda *_: computed.append(len(scales))),
    ]
    windowed = cn_request(square, ControlUnit(image=square, guidance_start=0.2, guidance_end=0.6), steps=10)
    try:
        engine.run(cn_request(square, steps=10))
        assert sum(s > 0 for s in scales) == 10 and computed == list(range(1, 11))
        scales.clear(), computed.clear()
        engine.run(windowed)
        # Steps 3-6 of 10 (fractions 0.2-0.6); diffusers asks for weight 0 on the others, and there the
        # ControlNet does not run at all.
        assert [s > 0 for s in scales] == [False] * 2 + [True] * 4 + [False] * 4
        assert computed == [3, 4, 5, 6]
        scales.clear(), computed.clear()
        engine.run(cn_request(square, ControlUnit(image=square, conditioning_scale=0.0), steps=10))
        assert computed == []
    finally:
        for hook in hooks:
            hook.remove()


def test_skipping_inactive_steps_changes_nothing(engine, square, monkeypatch):
    windowed = cn_request(square, ControlUnit(image=square, guidance_start=0.2, guidance_end=0.6), steps=10)
    skipped = engine.run(windowed)
    # The same request with diffusers' own behaviour: the ControlNet computes on every step.
    monkeypatch.setattr(pipelines, "skip_inactive_steps", lambda controlnet: controlnet)
    every_step = Engine(engine.settings)
    computed: list[int] = []
    embedding = every_step.cache.controlnet(TINY, "canny").controlnet_cond_embedding
    embedding.register_forward_hook(lambda *_: computed.append(1))
    assert np.array_equal(pixels(every_step.run(windowed).images[0]), pixels(skipped.images[0]))
    assert len(computed) == 10


def test_switching_control_type_keeps_the_base_weights(engine, square):
    base_unet = engine.cache.model(TINY).base.unet
    pointer = next(base_unet.parameters()).data_ptr()
    pipes = [engine.cache.pipeline(TINY, "txt2img", (t,)) for t in ("canny", "depth", "pose")]
    engine.run(cn_request(square, ControlUnit(image=square, control_type="depth")))
    engine.run(cn_request(square, ControlUnit(image=square, control_type="pose", preprocessor="none")))
    for pipe in pipes:
        assert pipe.unet is base_unet and next(pipe.unet.parameters()).data_ptr() == pointer
        assert pipe.vae is engine.cache.model(TINY).base.vae
    assert len({id(pipe.controlnet) for pipe in pipes}) == 3
    # Each ControlNet is loaded once and reused.
    assert engine.cache.controlnet(TINY, "depth") is pipes[1].controlnet


def test_tiny_controlnet_goes_through_the_loading_code(engine, cache_dir):
    controlnet = engine.cache.controlnet(TINY, "canny")
    assert isinstance(controlnet, ControlNetModel)
    assert (cache_dir / "tiny-controlnet-canny" / "diffusion_pytorch_model.safetensors").exists()
    # Its conditioning embedding downsamples 2×, like the tiny VAE, so the map's features fit the latents.
    assert tuple(controlnet.config.conditioning_embedding_out_channels) == (16, 32)


def test_two_units_run_as_a_multi_controlnet(engine, square, circle):
    units = (
        ControlUnit(image=square, control_type="canny"),
        ControlUnit(image=None, control_type="depth", preprocessor="none"),  # no picture: the first unit's
    )
    result = engine.run(cn_request(square, *units))
    pipe = engine.cache.pipeline(TINY, "txt2img", ("canny", "depth"))
    assert isinstance(pipe.controlnet, MultiControlNetModel) and len(pipe.controlnet.nets) == 2
    assert len(result.extras["control_maps"]) == 2
    assert np.array_equal(pixels(result.extras["control_maps"][1]), pixels(square))
    single = run(engine, cn_request(square, units[0]))
    assert np.abs(pixels(result.images[0]) - single).mean() > 1
    params = parse_infotext(result.infotext).params
    assert params["ControlNet 0"].startswith("Module: canny") and params["ControlNet 1"].startswith("Module: none")


def test_controlnet_img2img_starts_from_the_init_image(engine, square, circle):
    def img2img(strength: float, init: Image.Image) -> np.ndarray:
        return run(engine, cn_request(square, init_image=init, strength=strength, steps=8))

    # The tiny VAE is random, so "keeps the picture" is the demo model's test (test_semantic); here: both matter.
    weak, strong = img2img(0.25, circle), img2img(1.0, circle)
    other_init = img2img(0.25, square)
    assert np.abs(weak - strong).mean() > 1 and np.abs(weak - other_init).mean() > 1
    pipe = engine.cache.pipeline(TINY, "img2img", ("canny",))
    assert type(pipe).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    result = engine.run(cn_request(square, init_image=circle, strength=0.5))
    assert parse_infotext(result.infotext).params["Denoising strength"] == "0.5"


def test_guess_mode_changes_the_result(engine, square):
    assert np.abs(run(engine, cn_request(square, guess_mode=True)) - run(engine, cn_request(square))).mean() > 0


def test_size_follows_the_reference_picture(engine, test_image):
    result = engine.run(cn_request(test_image, steps=2))
    assert result.images[0].size == (96, 64) and result.extras["control_maps"][0].size == (96, 64)


# Refusals


@pytest.mark.parametrize(
    ("unit", "field", "message"),
    [
        (ControlUnit(guidance_start=0.6, guidance_end=0.4), "guidance_start", "below guidance end"),
        (ControlUnit(control_type="scribble"), "control_type", "canny, depth, pose"),
        (ControlUnit(low_threshold=200, high_threshold=100), "low_threshold", "not be above"),
        (ControlUnit(conditioning_scale=3), "conditioning_scale", "between 0 and 2"),
        (ControlUnit(preprocessor="hed"), "preprocessor", "auto, none"),
        (ControlUnit(detect_resolution=32), "detect_resolution", "0 .the output size. or at least 64"),
    ],
)
def test_bad_unit_settings_are_refused(engine, square, unit, field, message):
    with pytest.raises(ValidationError, match=message) as err:
        engine.run(cn_request(square, unit.replace(image=square)))
    assert err.value.field == field


def test_second_unit_fields_are_named_as_the_api_names_them(engine, square):
    units = (ControlUnit(image=square), ControlUnit(guidance_start=0.9, guidance_end=0.1))
    with pytest.raises(ValidationError) as err:
        engine.run(cn_request(square, *units))
    assert err.value.field == "guidance_start_2"


def test_no_reference_picture_is_refused(engine):
    with pytest.raises(ValidationError, match="reference picture") as err:
        engine.run(cn_request(None))
    assert err.value.field == "image"


def engine_with_controlnets(folder, cache_dir, name: str, controlnets: dict[str, str]) -> Engine:
    """An engine whose only model is the tiny one under ``name``, with these ControlNets."""
    models = write_registry(folder / "models.json", [name], controlnets=controlnets)
    settings = Settings(offline=True, cache_dir=cache_dir, models_file=models, default_model=name)
    return Engine(settings, ModelRegistry.load(models))


def test_model_without_that_controlnet_is_refused_by_name(tmp_path, cache_dir, square):
    engine = engine_with_controlnets(tmp_path, cache_dir, "Tiny canny", {"canny": "builtin:tiny-controlnet-canny"})
    with pytest.raises(ValidationError, match="has no depth ControlNet .it has: canny.") as err:
        engine.run(cn_request(square, ControlUnit(image=square, control_type="depth"), model="Tiny canny"))
    assert err.value.field == "control_type"


def test_controlnet_not_available_offline_says_what_to_do(tmp_path, cache_dir, square):
    engine = engine_with_controlnets(tmp_path, cache_dir, "Tiny hub cn", {"canny": "nobody/no-such-controlnet"})
    with pytest.raises(ModelUnavailable, match="not available offline.*local folder"):
        engine.run(cn_request(square, model="Tiny hub cn"))
    # The model itself still works.
    assert engine.run(Txt2ImgRequest(prompt="x", steps=1, width=64, height=64, model="Tiny hub cn")).images


def test_family_controlnets_are_listed_and_a_model_can_replace_them():
    registry = ModelRegistry.load(Settings().models_file)
    assert registry.get("SD 1.5").controlnet("depth") == "lllyasviel/control_v11f1p_sd15_depth"
    assert registry.get("SDXL 1.0").controlnet("canny") == "diffusers/controlnet-canny-sdxl-1.0"
    demo = registry.get("Demo shapes (offline)")
    assert demo.controlnet("canny") == "models/demo/controlnet_canny" and demo.controlnet("depth") is None


def test_the_controlnet_weights_are_not_copied(engine):
    """from_pipe shares the base modules: no parameter of the derived pipeline is a second copy."""
    base = engine.cache.model(TINY).base
    derived = engine.cache.pipeline(TINY, "img2img", ("canny",))

    def pointers(pipe) -> set[int]:
        return {p.data_ptr() for module in (pipe.unet, pipe.vae, pipe.text_encoder) for p in module.parameters()}

    assert pointers(derived) == pointers(base)


def test_controlnets_load_in_the_planned_dtype(engine):
    """On a GPU the ControlNet must be fp16 like the base model; the loader is told the plan's dtype."""
    spec = engine.registry.get(TINY)
    controlnet = load_controlnet(spec, "canny", engine.settings, DevicePlan("cpu", torch.float16))
    assert {p.dtype for p in controlnet.parameters()} == {torch.float16}
