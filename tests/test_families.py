"""Model families (backend.families): every family is one module, detection maps each model type to one family,
and what a family cannot do is refused by field name (the hook later families use)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from backend import families
from backend.families import OPTIONS, Family
from backend.families.base import TASKS
from backend.generation.prompting import clip_skip_for
from backend.models.checkpoints import Checkpoint
from backend.models.registry import ModelRegistry, RegistryError
from backend.schema.choices import CONTROL_TYPES
from backend.schema.requests import (
    ControlNetRequest,
    ControlUnit,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from backend.settings import PROJECT_ROOT

FAKE = Family(
    name="fake",
    label="Fake",
    model_types={"fake_base": False},
    single_file_pipeline="FakePipeline",
    supports=frozenset(OPTIONS) - {"clip_skip"},
    tasks=TASKS - {"inpaint"},
    inpaint_strategies=(),
    controlnet_types=frozenset({"canny"}),
)


@pytest.fixture
def with_fake(monkeypatch) -> Family:
    """FAKE registered for one test (the registry is a copy, so the real one stays as it was)."""
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    return families.register(FAKE)


def todays_requests() -> list[GenerationRequest]:
    """Requests every family runs today, the optional fields set too."""
    units = tuple(ControlUnit(control_type=t) for t in CONTROL_TYPES)
    return [
        Txt2ImgRequest(),
        Txt2ImgRequest(clip_skip=2, deep_cache=3, skip_cfg_after=0.5, guidance_scale=7.0),
        Img2ImgRequest(clip_skip=2, deep_cache=2),
        InpaintRequest(skip_cfg_after=0.4),
        ControlNetRequest(units=units, clip_skip=3),
    ]


def test_every_family_of_the_models_file_has_a_module():
    data = json.loads((PROJECT_ROOT / "presets" / "models.json").read_text(encoding="utf-8"))
    used = set(data["families"]) | {entry["family"] for entry in data["models"]}
    assert used <= set(families.FAMILIES)
    for name, family in families.FAMILIES.items():
        assert family.name == name
        assert (PROJECT_ROOT / "backend" / "families" / f"{name}.py").is_file()
        if family.model_types:  # single files read its config folder
            assert (PROJECT_ROOT / "backend" / "configs" / name).is_dir()
    assert families.names() == ("sd15", "sd2", "sdxl", "sd3", "flux", "chroma")


def test_each_model_type_maps_to_one_family():
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    claimed = [kind for family in families.FAMILIES.values() for kind in family.model_types]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= set(DIFFUSERS_DEFAULT_PIPELINE_PATHS)  # names diffusers' detection really gives
    assert families.model_types() == {
        "v1": ("sd15", False),
        "inpainting": ("sd15", True),
        "v2": ("sd2", False),
        "inpainting_v2": ("sd2", True),
        "xl_base": ("sdxl", False),
        "xl_inpaint": ("sdxl", True),
        "sd3": ("sd3", False),
        "sd35_medium": ("sd3", False),
        "sd35_large": ("sd3", False),
        "flux-dev": ("flux", False),
        "flux-schnell": ("flux", False),
        "flux-fill": ("flux", False),  # an inpainting model, but no 9-channel UNet (backend.models.flux_fill)
        "chroma": ("chroma", False),
    }
    family, inpainting = families.for_model_type("inpainting_v2")
    assert (family.name, inpainting) == ("sd2", True)
    assert families.for_model_type("flux-control") is None  # FLUX.1 Depth/Canny files; Fill runs (test_flux_fill)
    with pytest.raises(ValueError, match="claimed by sd15"):
        families.register(dataclasses.replace(FAKE, model_types={"v1": False}))
    with pytest.raises(ValueError, match="twice"):
        families.register(families.family("sdxl"))


def test_labels_and_loading_declarations_are_todays():
    assert families.labels() == "SD 1.x, SD 2.x, SDXL, SD 3.x, FLUX and Chroma"
    sd15, sd2, sdxl = (families.family(name) for name in ("sd15", "sd2", "sdxl"))
    assert Checkpoint("a", PROJECT_ROOT, "sd2", True, "v_prediction").label == "SD 2.x v inpainting"
    assert Checkpoint("a", PROJECT_ROOT, "sd2", False, "epsilon").label == "SD 2.x eps"
    assert Checkpoint("a", PROJECT_ROOT, "sd15", True).label == "SD 1.x inpainting"
    assert Checkpoint("a", PROJECT_ROOT, "sdxl").label == "SDXL"
    assert (sd15.default_prediction, sd2.default_prediction, sdxl.default_prediction) == (
        "epsilon",
        "v_prediction",
        "epsilon",
    )
    for family in (sd15, sd2):
        assert dict(family.pretrained_kwargs) == {"safety_checker": None, "requires_safety_checker": False}
        assert family.single_file_pipeline == "StableDiffusionPipeline"
    assert dict(sdxl.pretrained_kwargs) == {}
    assert sdxl.single_file_pipeline == "StableDiffusionXLPipeline"
    # backend.grid's can_batch takes StableDiffusionPipeline alone: the flag says the same per family.
    assert [f.grid_batching for f in (sd15, sd2, sdxl)] == [True, True, False]
    assert [f.dual_text_encoders for f in (sd15, sd2, sdxl)] == [False, False, True]
    with pytest.raises(KeyError, match="unknown model family 'hunyuan'"):
        families.family("hunyuan")


def test_options_neutral_values_are_the_request_defaults():
    defaults = Txt2ImgRequest()
    for name, (_, neutral, used) in OPTIONS.items():
        assert getattr(defaults, name) == neutral
        assert not used(defaults)


@pytest.mark.parametrize("name", ["sd15", "sd2", "sdxl"])
def test_todays_families_refuse_nothing_they_run_today(name):
    family = families.family(name)
    for request in todays_requests():
        assert family.unsupported(request) is None, request


def test_sdxl_ignores_clip_skip_as_the_pipeline_code_does():
    for family in families.FAMILIES.values():
        if "clip_skip" not in family.supports | family.ignores:
            continue  # refused by field name (FLUX, SD3), never run
        pipe = SimpleNamespace(text_encoder_2=object() if family.dual_text_encoders else None)
        assert family.clip_skip(2) == clip_skip_for(pipe, 2)
    assert families.family("sdxl").clip_skip(2) == 1
    assert families.family("sd15").clip_skip(2) == 2


def test_a_family_refuses_what_it_cannot_do_by_field_name(with_fake):
    fake = families.family("fake")
    assert fake is with_fake
    assert fake.unsupported(Txt2ImgRequest()) is None
    assert fake.unsupported(Txt2ImgRequest(clip_skip=1, deep_cache=4)) is None
    assert fake.unsupported(Txt2ImgRequest(clip_skip=2)) == (
        "clip_skip",
        "Fake models do not support clip skip; leave it at 1",
    )
    field, message = fake.unsupported(InpaintRequest())
    assert field == "model" and "inpaint" in message
    units = (ControlUnit(control_type="canny"), ControlUnit(control_type="depth"))
    field, message = fake.unsupported(ControlNetRequest(units=units))
    assert field == "control_type_2" and "depth" in message
    # A family without an option refuses it only when a request really uses it (skip CFG needs CFG).
    no_cfg_skip = dataclasses.replace(FAKE, supports=frozenset())
    assert no_cfg_skip.unsupported(Txt2ImgRequest(skip_cfg_after=0.5, guidance_scale=1.0)) is None
    assert no_cfg_skip.unsupported(Txt2ImgRequest(skip_cfg_after=0.5))[0] == "skip_cfg_after"
    assert no_cfg_skip.unsupported(Txt2ImgRequest(deep_cache=2))[0] == "deep_cache"


def test_a_registered_family_is_known_everywhere(with_fake, tmp_path):
    assert families.for_model_type("fake_base") == (with_fake, False)
    assert families.labels() == "SD 1.x, SD 2.x, SDXL, SD 3.x, FLUX, Chroma and Fake"
    entry = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 1.0, "latent_rgb_factors": [[0, 0, 0]] * 4}
    models = {"families": {"fake": entry}, "models": [{"name": "F", "source": "x/y", "family": "fake"}]}
    path = tmp_path / "models.json"
    path.write_text(json.dumps(models), encoding="utf-8")
    assert ModelRegistry.load(path).get("F").family == "fake"


def test_an_unknown_family_is_refused_with_todays_message(tmp_path):
    entry = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 1.0, "latent_rgb_factors": [[0, 0, 0]] * 4}
    models = {"families": {"hunyuan": entry}, "models": [{"name": "F", "source": "x/y", "family": "hunyuan"}]}
    path = tmp_path / "models.json"
    path.write_text(json.dumps(models), encoding="utf-8")
    known = r"\('sd15', 'sd2', 'sdxl', 'sd3', 'flux', 'chroma'\)"
    with pytest.raises(RegistryError, match=rf"family must be one of {known}, got 'hunyuan'"):
        ModelRegistry.load(path)


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown options"):
        dataclasses.replace(FAKE, supports=frozenset({"hires"}))
    with pytest.raises(ValueError, match="inpaint strategy"):
        dataclasses.replace(FAKE, tasks=TASKS)


def test_importing_the_families_imports_no_torch_and_no_model_code():
    code = (
        "import sys, backend.families; "
        "heavy = ('torch', 'diffusers', 'transformers', 'gradio', 'backend.models', 'backend.generation', "
        "'backend.grid', 'backend.images', 'backend.library', 'backend.serving'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy[4:])))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
