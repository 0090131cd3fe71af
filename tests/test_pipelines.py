"""The pipeline cache: one copy of the weights per model, derived task pipelines, explicit unloads."""

from __future__ import annotations

import gc
import weakref

import pytest

from backend.generation.engine import Engine
from backend.models.loaders import ModelUnavailable
from backend.models.pipelines import PipelineCache, load_pipeline
from backend.models.registry import ModelRegistry
from backend.settings import Settings

from .conftest import write_registry


def test_task_pipelines_share_the_loaded_weights(settings, two_model_registry):
    cache = PipelineCache(two_model_registry, settings)
    base = cache.pipeline("Tiny A", "txt2img")
    for task in ("img2img", "inpaint"):
        derived = cache.pipeline("Tiny A", task)
        assert derived is not base
        for name in ("unet", "vae", "text_encoder"):
            ours, theirs = getattr(derived, name), getattr(base, name)
            assert ours is theirs
            first = next(theirs.parameters())
            assert next(ours.parameters()).data_ptr() == first.data_ptr()
            assert first.dtype == cache.plan.dtype  # from_pipe must not recast the shared weights
        assert cache.pipeline("Tiny A", task) is derived  # derived once, then cached


def test_model_loaded_once(settings, two_model_registry):
    calls = []

    def counting_loader(spec, s, plan):
        calls.append(spec.name)
        return load_pipeline(spec, s, plan)

    cache = PipelineCache(two_model_registry, settings, loader=counting_loader)
    for task in ("txt2img", "img2img", "txt2img", "inpaint"):
        cache.pipeline("Tiny A", task)
    assert calls == ["Tiny A"]


def test_switching_models_frees_the_old_one(tmp_path, cache_dir, two_model_registry):
    settings = Settings(offline=True, output_dir=tmp_path, cache_dir=cache_dir, max_models=1)
    cache = PipelineCache(two_model_registry, settings)
    unet_a = weakref.ref(cache.pipeline("Tiny A", "txt2img").unet)
    derived_a = weakref.ref(cache.pipeline("Tiny A", "img2img"))
    cache.pipeline("Tiny B", "txt2img")
    gc.collect()
    assert cache.resident == ["Tiny B"]
    assert unet_a() is None and derived_a() is None


def test_max_models_keeps_the_most_recent(tmp_path, cache_dir):
    registry = ModelRegistry.load(write_registry(tmp_path / "m.json", ["A", "B", "C"]))
    cache = PipelineCache(registry, Settings(offline=True, cache_dir=cache_dir, max_models=2))
    for name in ("A", "B", "A", "C"):
        cache.model(name)
    assert cache.resident == ["A", "C"]


def test_engine_switches_models_per_request(tmp_path, cache_dir, tiny_request):
    registry = ModelRegistry.load(write_registry(tmp_path / "m.json", ["Tiny A", "Tiny B"]))
    engine = Engine(
        Settings(offline=True, output_dir=tmp_path / "o", cache_dir=cache_dir, default_model="Tiny A"), registry
    )
    engine.run(tiny_request.replace(model="Tiny A", steps=2))
    result = engine.run(tiny_request.replace(model="Tiny B", steps=2))
    assert engine.cache.resident == ["Tiny B"]
    assert "Model: Tiny B" in result.infotext


def test_offline_hub_model_gives_clear_message(settings, tmp_path):
    registry = ModelRegistry.load(settings.models_file)
    cache = PipelineCache(registry, settings)
    with pytest.raises(ModelUnavailable, match="not available offline.*local folder"):
        cache.model("SD 1.5")


def test_missing_local_folder_gives_clear_message(settings, tmp_path):
    path = write_registry(tmp_path / "m.json", ["Gone"])
    text = path.read_text().replace("builtin:tiny", str(tmp_path / "nowhere"))
    path.write_text(text)
    cache = PipelineCache(ModelRegistry.load(path), settings)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        cache.model("Gone")


def test_local_folder_loads_through_the_same_code(settings, tmp_path, cache_dir):
    """A diffusers folder listed by path loads with from_pretrained(local_files_only=True)."""
    path = write_registry(tmp_path / "m.json", ["Folder"])
    path.write_text(path.read_text().replace("builtin:tiny", str(cache_dir / "tiny")))
    registry = ModelRegistry.load(path)
    assert registry.get("Folder").kind == "folder"
    pipe = PipelineCache(registry, settings).pipeline("Folder", "txt2img")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
