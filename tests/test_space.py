"""Running on a Hugging Face Space: front matter, the CPU-Space profile, listening, the Duplicate link, ZeroGPU.

No network and no real Space: the Space is simulated by its environment variables (``SPACE_ID``,
``SPACES_ZERO_GPU``), and ZeroGPU by a stand-in ``spaces`` module that records what it is asked for.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import app
from backend.generation.engine import Engine
from backend.grid.plan import GridRequest
from backend.grid.runner import grid_runner
from backend.models import zerogpu
from backend.models.devices import DevicePlan, pixel_step_limit, plan_device
from backend.models.registry import ModelRegistry
from backend.serving import space
from backend.settings import Settings
from tests.conftest import TINY, pixels

ROOT = Path(__file__).resolve().parent.parent
SPACE = "someone/sd-studio"


@pytest.fixture
def no_space(monkeypatch):
    """A clean environment: not on a Space, no ZeroGPU, no Gradio server variables, no SD Studio settings."""
    for name in ("SPACE_ID", "SPACES_ZERO_GPU", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SYSTEM"):
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("SDSTUDIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- front matter ------------------------------------------------------------------------------------------------


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "the Space configuration must be the very first thing in README.md"
    block = text[4 : text.index("\n---\n", 4)]
    return yaml.safe_load(block)


def test_front_matter_is_a_valid_space_config():
    meta = front_matter()
    required = {"title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "app_file", "python_version",
                "suggested_hardware", "models", "preload_from_hub", "short_description", "license"}
    assert required <= set(meta)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["python_version"] == "3.11"  # quoted: a bare 3.10 would read as the number 3.1
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and meta["sdk_version"] == pinned.group(1)
    assert len(meta["short_description"]) <= 60  # the Hub's limit
    default = ModelRegistry.load(Settings().models_file).get(Settings().default_model)
    assert default.kind == "hub" and default.source in meta["models"]
    repo, files = meta["preload_from_hub"][0].split(" ", 1)
    assert repo == default.source
    names = files.split(",")
    # What the diffusers pipeline loads: its index, each component's config and safetensors weights.
    for needed in ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                   "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json"):
        assert needed in names
    assert not any(name.endswith(".ckpt") or name.startswith("safety_checker") for name in names)


# --- the CPU-Space profile ----------------------------------------------------------------------------------------


def test_cpu_space_gets_the_fast_profile_and_says_so():
    env = {"SPACE_ID": SPACE}
    defaults, notice = space.profile(env, cuda=False, turbo=False)
    settings = Settings.from_env(env, defaults=defaults)
    assert settings.default_model == space.CPU_SPACE_MODEL == "Demo shapes (offline)"
    assert settings.save_outputs is False
    assert "runs on a CPU" in notice and "Nothing is saved" in notice
    # Precision is --dtype auto's choice there as everywhere (bf16 only on a CPU with native bf16), not pinned.
    assert "dtype" not in defaults and settings.dtype == "auto"
    # The model's own size is the small one the page starts with.
    assert ModelRegistry.load(settings.models_file).get(settings.default_model).defaults.width == 64


def test_cpu_space_with_openvino_and_sd_turbo_cached_starts_with_sd_turbo(monkeypatch):
    env = {"SPACE_ID": SPACE}
    defaults, notice = space.profile(env, cuda=False, turbo=True)
    settings = Settings.from_env(env, defaults=defaults)
    assert settings.default_model == space.TURBO_MODEL and settings.backend == "openvino"
    assert "SD-Turbo at 512×512, 1 step, on OpenVINO" in notice and "computed from the benchmark" in notice
    spec = ModelRegistry.load(settings.models_file).get(settings.default_model)
    assert spec.source == space.TURBO_SOURCE
    assert (spec.defaults.width, spec.defaults.steps, spec.defaults.guidance_scale) == (512, 1, 0.0)
    # The owner's model wins, and then the backend is left to --backend's own default.
    env["SDSTUDIO_DEFAULT_MODEL"] = "SD 1.5"
    defaults, notice = space.profile(env, cuda=False, turbo=True)
    assert "default_model" not in defaults and "backend" not in defaults and "OpenVINO" not in notice
    # SD-Turbo is chosen only where its weights are cached and openvino is installed: never a download at start.
    for installed, cached in [(True, False), (False, True)]:
        monkeypatch.setattr(space.openvino_unet, "available", lambda installed=installed: installed)
        monkeypatch.setattr(space, "is_cached", lambda source, cached=cached: cached and source == space.TURBO_SOURCE)
        assert not space.turbo_ready()
        assert space.profile({"SPACE_ID": SPACE}, cuda=False)[0]["default_model"] == space.CPU_SPACE_MODEL
    monkeypatch.setattr(space.openvino_unet, "available", lambda: True)
    assert space.turbo_ready()


def test_no_profile_off_a_space():
    defaults, notice = space.profile({}, cuda=False)
    assert defaults == {} and notice == ""
    settings = Settings.from_env({}, defaults=defaults)
    assert settings.default_model == "SD 1.5" and settings.save_outputs is True and settings.dtype == "auto"


def test_gpu_space_keeps_its_model_but_saves_nothing():
    defaults, notice = space.profile({"SPACE_ID": SPACE}, cuda=True)
    assert defaults == {"save_outputs": False} and notice == ""


def test_the_space_owners_variables_win_over_the_profile():
    env = {"SPACE_ID": SPACE, "SDSTUDIO_DEFAULT_MODEL": "SD-Turbo", "SDSTUDIO_SAVE_OUTPUTS": "1"}
    defaults, notice = space.profile(env, cuda=False)
    settings = Settings.from_env(env, defaults=defaults)
    assert settings.default_model == "SD-Turbo" and settings.save_outputs is True
    assert "Nothing is saved" not in notice and "Demo shapes" not in notice


def notes(demo) -> dict[str, str]:
    """The page's Markdown blocks by element id."""
    return {b.elem_id: b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and b.elem_id}


def test_the_page_states_the_profile_and_offers_a_duplicate(monkeypatch, no_space, cache_dir, tmp_path):
    """Through app.py's own settings path: the notice and the Duplicate link on the page, only on a Space."""
    from ui.app import build_demo

    monkeypatch.setenv("SDSTUDIO_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(space.torch.cuda, "is_available", lambda: False)

    def configure(*flags: str) -> tuple[Settings, str]:
        return app.build_settings(app.parse_args(["--output-dir", str(tmp_path), *flags]))

    def page() -> tuple[Settings, dict[str, str]]:
        settings, notice = configure()
        engine = Engine(settings)
        engine.startup_notice = " ".join(filter(None, [notice, engine.startup_notice]))
        return settings, notes(build_demo(engine))

    settings, shown = page()
    assert settings.default_model == "SD 1.5" and settings.save_outputs
    assert "duplicate-space" not in shown and "runs on a CPU" not in shown.get("startup-notice", "")

    monkeypatch.setenv("SPACE_ID", SPACE)
    settings, shown = page()
    assert settings.default_model == space.CPU_SPACE_MODEL and not settings.save_outputs
    assert "runs on a CPU" in shown["startup-notice"]
    assert f"https://huggingface.co/spaces/{SPACE}?duplicate=true" in shown["duplicate-space"]
    # A flag still wins over the profile.
    assert configure("--model", TINY)[0].default_model == TINY


# --- listening on a Space ----------------------------------------------------------------------------------------


def test_serve_address():
    assert space.serve_address(None, None, False, {}) == ("127.0.0.1", 7860)
    assert space.serve_address(None, None, True, {}) == ("0.0.0.0", 7860)
    assert space.serve_address(None, None, False, {"SPACE_ID": SPACE}) == ("0.0.0.0", 7860)
    gradio_env = {"SPACE_ID": SPACE, "GRADIO_SERVER_NAME": "10.0.0.5", "GRADIO_SERVER_PORT": "7861"}
    assert space.serve_address(None, None, False, gradio_env) == ("10.0.0.5", 7861)
    assert space.serve_address("127.0.0.2", 9000, False, gradio_env) == ("127.0.0.2", 9000)  # explicit wins


def test_share_is_ignored_on_a_space(monkeypatch, no_space, caplog):
    import ui.app

    calls: dict = {}

    class FakeDemo:
        def launch(self, **kwargs):
            calls.update(kwargs)

    monkeypatch.setattr(app, "build_engine", lambda settings: type("E", (), {"startup_notice": "", "precision": ""})())
    monkeypatch.setattr(ui.app, "build_demo", lambda engine: FakeDemo())
    monkeypatch.setattr(ui.app, "launch_options", lambda *args: {})
    monkeypatch.setattr(space.torch.cuda, "is_available", lambda: False)

    app.main(["--share", "--offline"])
    assert calls["share"] is True and calls["server_name"] == "127.0.0.1" and calls["server_port"] == 7860

    monkeypatch.setenv("SPACE_ID", SPACE)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    app.main(["--share", "--offline"])
    assert calls["share"] is False and calls["server_name"] == "0.0.0.0" and calls["server_port"] == 7861
    assert "--share ignored" in caplog.text


# --- ZeroGPU ----------------------------------------------------------------------------------------------------


class StubSpaces(types.ModuleType):
    """Stands in for the ``spaces`` package: ``GPU(duration=…)`` records each decoration and call, and runs the
    function in this process (the real one forks a worker with a GPU)."""

    def __init__(self) -> None:
        super().__init__("spaces")
        self.decorated: list = []
        self.durations: list[int] = []
        self.inside = False

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 (the package's name)
        def decorate(fn):
            self.decorated.append((fn, duration))

            def handler(*args, **kwargs):
                self.durations.append(duration(*args, **kwargs) if callable(duration) else duration)
                self.inside = True
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.inside = False

            return handler

        return decorate(task) if callable(task) else decorate


@pytest.fixture
def stub_spaces(monkeypatch) -> StubSpaces:
    stub = StubSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stub)
    return stub


@pytest.fixture(scope="module")
def zerogpu_engine(tmp_path_factory, cache_dir) -> Engine:
    """One engine planned as on ZeroGPU (weights on the CPU, fp32 here: fp16 on this test CPU would be slow)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "spaces", StubSpaces())
        patch.setenv("SPACES_ZERO_GPU", "true")
        out = tmp_path_factory.mktemp("zerogpu-outputs")
        engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, dtype="float32"))
        assert engine.cache.plan == DevicePlan("cpu", torch.float32, gpu_per_call=True)
        return engine


def test_duration_grows_with_the_work_within_bounds():
    small = zerogpu.duration_for(4, 64, 64, 1)
    assert small == zerogpu.MIN_SECONDS
    assert zerogpu.duration_for(2048, 2048, 2048, 8) == zerogpu.MAX_SECONDS
    sd15 = zerogpu.duration_for(50, 512, 512, 4)  # 52 M pixel-steps
    sdxl = zerogpu.duration_for(50, 1024, 1024, 4)  # 210 M pixel-steps
    assert zerogpu.MIN_SECONDS < sd15 < sdxl < zerogpu.MAX_SECONDS
    assert sd15 == zerogpu.OVERHEAD_SECONDS + -(-50 * 512 * 512 * 4 // zerogpu.PIXEL_STEPS_PER_SECOND)


def test_zerogpu_needs_both_the_variable_and_the_package(monkeypatch, stub_spaces):
    assert zerogpu.active({"SPACES_ZERO_GPU": "true"})
    assert not zerogpu.active({})
    monkeypatch.setitem(sys.modules, "spaces", None)  # the package cannot be imported
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: None)
    assert not zerogpu.active({"SPACES_ZERO_GPU": "true"})


def test_zerogpu_keeps_cuda_out_of_the_main_process(monkeypatch, stub_spaces):
    """ZeroGPU's ``spaces`` makes ``torch.cuda.is_available()`` say True in the main process; the weights must
    still stay on the CPU there, and the cost cap is what fits in ZeroGPU's longest call."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert plan_device(Settings()) == DevicePlan("cpu", torch.float16, gpu_per_call=True)
    assert pixel_step_limit(Settings()) == zerogpu.MAX_PIXEL_STEPS
    assert space.profile({"SPACE_ID": SPACE, "SPACES_ZERO_GPU": "true"}, cuda=None)[1] == ""  # not a CPU Space
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert plan_device(Settings()).device == "cuda"


def test_engine_runs_go_through_spaces_gpu_with_their_duration(
    monkeypatch, stub_spaces, zerogpu_engine, tiny_request, shared_engine
):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    # A slow imaginary GPU, so the tiny model's runs ask for different durations, not all the minimum.
    monkeypatch.setattr(zerogpu, "PIXEL_STEPS_PER_SECOND", 1000)
    engine = zerogpu_engine
    moves: list[tuple[str, bool]] = []
    monkeypatch.setattr(zerogpu.torch.cuda, "is_available", lambda: True)  # as inside a real GPU call
    pipe_class = type(engine.cache.pipeline(TINY, "txt2img"))
    monkeypatch.setattr(pipe_class, "to", lambda pipe, device: moves.append((device, stub_spaces.inside)) or pipe)

    first = engine.run(tiny_request)
    second = engine.run(dataclasses.replace(tiny_request, steps=3, batch_size=2))
    assert stub_spaces.durations == [
        zerogpu.duration_for(4, 64, 64, 1),
        zerogpu.duration_for(3, 64, 64, 2),
    ] == [10 + 17, 10 + 25]
    assert len(stub_spaces.decorated) == 2 and all(d == s for (_, d), s in zip(stub_spaces.decorated,
                                                                             stub_spaces.durations, strict=True))
    assert moves == [("cuda", True), ("cuda", True)]  # moved to the GPU only inside each GPU call
    # The same pictures as without ZeroGPU: the wrapper changes where, not what.
    monkeypatch.delenv("SPACES_ZERO_GPU")
    plain = shared_engine.run(tiny_request)
    assert (pixels(first.images[0]) == pixels(plain.images[0])).all()
    assert len(second.images) == 2


def test_grid_chunks_go_through_spaces_gpu(monkeypatch, stub_spaces, zerogpu_engine):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(zerogpu, "PIXEL_STEPS_PER_SECOND", 1000)
    engine = zerogpu_engine
    request = GridRequest(prompt="x", width=64, height=64, model=TINY, samplers=["Euler", "DDIM"], steps_list=[2, 3])
    result = grid_runner(engine).run(request)
    assert len(result.images) == 4
    # The tiny pipeline is batched by step count: one GPU call per group, each asking for its own work.
    assert stub_spaces.durations == [zerogpu.duration_for(2, 64, 64, 2), zerogpu.duration_for(3, 64, 64, 2)]
    assert stub_spaces.durations == [10 + 17, 10 + 25]


def test_without_the_variable_the_stub_is_not_used(monkeypatch, stub_spaces, shared_engine, tiny_request):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    result = shared_engine.run(tiny_request)
    assert result.images and stub_spaces.decorated == [] and stub_spaces.durations == []
    zerogpu.prepare()
    assert stub_spaces.decorated == []


def test_prepare_declares_a_gpu_function_at_startup(monkeypatch, stub_spaces):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    zerogpu.prepare()
    assert [fn.__name__ for fn, _ in stub_spaces.decorated] == ["_startup_probe"]


def test_a_per_call_worker_is_let_go(monkeypatch):
    """``spaces`` keeps each decorated function and its idle worker process; ours are used once."""

    class Process:
        terminated = False

        def is_alive(self):
            return not self.terminated

        def terminate(self):
            self.terminated = True

    worker = types.SimpleNamespace(process=Process())
    workers = {0: worker}

    def run():
        return None

    def handler():
        return workers  # a closure over ``workers``, as spaces' handler is

    cache = {run: handler, handler: handler}
    decorator = types.ModuleType("spaces.zero.decorator")
    decorator.decorated_cache = cache
    zero = types.ModuleType("spaces.zero")
    zero.decorator = decorator
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    monkeypatch.setitem(sys.modules, "spaces.zero", zero)
    monkeypatch.setitem(sys.modules, "spaces.zero.decorator", decorator)
    zerogpu._retire(run, handler)
    assert cache == {} and worker.process.terminated and workers == {}
