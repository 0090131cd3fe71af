"""Settings from the environment, and the model registry read from presets/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.models import devices
from backend.models.devices import cpu_bf16_flags, describe_plan, plan_device
from backend.models.registry import ModelRegistry, RegistryError
from backend.settings import Settings


def test_env_overrides_and_types():
    s = Settings.from_env(
        {
            "SDSTUDIO_MAX_BATCH": "3",
            "SDSTUDIO_OFFLINE": "yes",
            "SDSTUDIO_OUTPUT_DIR": "/x/y",
            "SDSTUDIO_VAE_TILING": "1",
            "SDSTUDIO_MAX_GUIDANCE": "12.5",
        }
    )
    assert s.max_batch == 3 and s.offline and s.vae_tiling and s.max_guidance == 12.5
    assert s.output_dir == Path("/x/y")


def test_hf_hub_offline_implies_offline():
    assert Settings.from_env({"HF_HUB_OFFLINE": "1"}).offline
    assert not Settings.from_env({}).offline


def test_explicit_overrides_beat_env():
    assert Settings.from_env({"SDSTUDIO_MAX_STEPS": "10"}, max_steps=20).max_steps == 20


def test_bad_env_value_names_the_variable():
    with pytest.raises(ValueError, match="SDSTUDIO_MAX_STEPS='lots'"):
        Settings.from_env({"SDSTUDIO_MAX_STEPS": "lots"})


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbugs\t\t: none\n"


@pytest.mark.parametrize(
    ("extra", "flags", "dtype"),
    [
        ("", [], torch.float32),
        ("avx512_bf16", ["avx512_bf16"], torch.bfloat16),
        ("amx_tile amx_bf16", ["amx_bf16"], torch.bfloat16),
    ],
)
def test_auto_cpu_precision_follows_native_bf16(tmp_path, monkeypatch, extra, flags, dtype):
    """bf16 where the CPU computes it natively (the benchmark: 2x fp32, pixels within 4/255), fp32 elsewhere; the
    page says which and why."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    monkeypatch.setattr(devices, "CPUINFO", cpuinfo)
    assert cpu_bf16_flags(cpuinfo) == flags
    settings = Settings(device="cpu")
    plan = plan_device(settings)
    assert plan.dtype == dtype
    line = describe_plan(settings, plan)
    assert str(dtype).removeprefix("torch.") in line
    assert ("no native bf16" in line) == (not flags)
    assert ("--dtype float32 for full precision" in line) == bool(flags)


def test_unreadable_cpuinfo_means_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "CPUINFO", tmp_path / "missing")
    assert plan_device(Settings(device="cpu")).dtype == torch.float32


def test_dtype_override():
    assert plan_device(Settings(device="cpu", dtype="bfloat16")).dtype == torch.bfloat16
    assert plan_device(Settings(device="cpu", dtype="float32")).dtype == torch.float32
    assert "set by --dtype" in describe_plan(Settings(device="cpu", dtype="float32"), plan_device(Settings()))
    with pytest.raises(ValueError, match="dtype must be one of"):
        plan_device(Settings(device="cpu", dtype="fp8"))


def test_shipped_registry():
    registry = ModelRegistry.load(Settings().models_file)
    sd15 = registry.get("SD 1.5")
    assert sd15.source == "stable-diffusion-v1-5/stable-diffusion-v1-5" and sd15.kind == "hub"
    assert sd15.family == "sd15" and sd15.defaults.width == 512 and sd15.inpaint
    assert registry.get("SDXL 1.0").defaults.width == 1024
    assert registry.get("Tiny (offline test model)").kind == "builtin"
    assert Settings().default_model in registry.names and Settings().offline_model in registry.names


def test_source_kinds(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(
        '{"families": {"sd15": {"width": 512, "height": 512, "steps": 20, "guidance_scale": 7,'
        ' "latent_rgb_factors": [[1,0,0],[0,1,0],[0,0,1],[0,0,0]]}}, "models": ['
        '{"name": "ckpt", "source": "/models/dreamshaper.safetensors", "family": "sd15"},'
        '{"name": "dir", "source": "./models/mine", "family": "sd15"}]}'
    )
    registry = ModelRegistry.load(path)
    assert registry.get("ckpt").kind == "single_file"
    assert registry.get("dir").kind == "folder"


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"models": [', "line 1"),
        (
            '{"families": {}, "models": [{"name": "x", "source": "y", "family": "sd15"}]}',
            r"models\[0\]: missing or unknown",
        ),
        ('{"families": {}, "models": []}', "no models listed"),
    ],
)
def test_malformed_registry_names_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RegistryError, match=message) as err:
        ModelRegistry.load(path)
    assert "bad.json" in str(err.value)
