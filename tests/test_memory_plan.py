"""The memory plan (backend.models.devices): which placement a model gets for a GPU's free memory, with faked
free-memory numbers and a fake pipeline that records what was asked of it (no GPU needed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from backend.models import devices, loaders
from backend.models.devices import (
    FULL,
    GIB,
    MODEL_OFFLOAD,
    QUANTIZED_TRANSFORMER,
    SEQUENTIAL,
    STATED_SIZES,
    DevicePlan,
    describe_plan,
    place,
    plan_memory,
    quantized_parts,
    weight_sizes,
)
from backend.models.quantize import NO_TORCHAO
from backend.models.registry import ModelRegistry
from backend.settings import Settings
from bench.memory_table import rows

FLUX_DEV = STATED_SIZES["black-forest-labs/FLUX.1-dev"]


@pytest.mark.parametrize(
    "free_gib, mode", [(79.5, FULL), (47.5, FULL), (23.5, MODEL_OFFLOAD), (15.5, SEQUENTIAL), (7.5, SEQUENTIAL)]
)
def test_flux_dev_at_bf16_fits_whole_only_above_24_gb(free_gib, mode):
    plan = plan_memory(free_gib * GIB, FLUX_DEV, blocker=NO_TORCHAO)
    assert plan.mode == mode and not plan.quantized


@pytest.mark.parametrize(
    "free_gib, mode, quantized",
    [(23.5, MODEL_OFFLOAD, False), (15.5, MODEL_OFFLOAD, True), (12.5, MODEL_OFFLOAD, True), (11.5, SEQUENTIAL, False)],
)
def test_an_8_bit_transformer_is_chosen_only_where_bf16_needs_sequential_offload(free_gib, mode, quantized):
    """FLUX.1 dev's transformer is 22.2 GB in bf16, 11.1 GB in 8 bits; T5-XXL (8.9 GB) then is the largest part."""
    plan = plan_memory(free_gib * GIB, FLUX_DEV, blocker="")
    assert (plan.mode, plan.quantized) == (mode, quantized)
    if quantized:
        assert plan.need_gib == pytest.approx(FLUX_DEV["transformer"] / 2 / GIB + 1)  # the 8-bit transformer, at once
        assert "model CPU offload with an 8-bit transformer (int8 weight-only (torchao))" in plan.line()


def test_without_torchao_the_plan_says_why_it_did_not_quantize(monkeypatch):
    find_spec = importlib.util.find_spec
    hidden = lambda name, *args: find_spec(name, *args) if name != "torchao" else None  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    plan = plan_memory(15.5 * GIB, FLUX_DEV)
    assert plan.mode == SEQUENTIAL and not plan.quantized
    assert "an 8-bit transformer would fit but torchao is not installed (pip install torchao)" in plan.line()
    assert not plan_memory(7.5 * GIB, FLUX_DEV).why_not  # nothing would have fitted: nothing to explain


def test_a_unet_model_is_never_quantized():
    sdxl = STATED_SIZES["stabilityai/stable-diffusion-xl-base-1.0"]
    plan = plan_memory(4 * GIB, sdxl, blocker="")
    assert plan.mode == SEQUENTIAL and not plan.quantized and not plan.why_not


def test_the_loader_plans_before_loading_from_the_files_sizes(monkeypatch):
    """The plan that decides the 8-bit load runs before the weights are read (quantization happens on load)."""
    registry = ModelRegistry.load(Settings().models_file)
    flux = next(spec for spec in registry.models.values() if spec.source == "black-forest-labs/FLUX.1-dev")
    cuda, settings = DevicePlan("cuda", torch.bfloat16), Settings()
    monkeypatch.setattr(devices, "quantize_blocker", lambda: "")  # as with torchao installed
    plan = loaders.memory_plan(flux, flux.source, settings, cuda, free_bytes=15.5 * GIB)
    assert plan is not None and plan.quantized
    assert not loaders.memory_plan(flux, flux.source, settings, cuda, free_bytes=23.5 * GIB).quantized
    assert loaders.memory_plan(flux, flux.source, settings, DevicePlan("cpu", torch.float32), 0) is None
    assert loaders.memory_plan(flux, flux.source, Settings(cpu_offload=True), cuda, 0) is None


def test_a_single_files_parts_come_from_its_header(tmp_path):
    """An all-in-one FLUX file splits into its transformer and the parts it holds (2 bytes a weight: fp8 weights
    are upcast on load); an SD file stays whole."""
    path = tmp_path / "flux-aio.safetensors"
    fp8 = torch.zeros(30, 10, dtype=torch.float8_e4m3fn)
    save_file({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": fp8,
               "text_encoders.t5xxl.transformer.shared.weight": torch.zeros(20, 10),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(5)}, path)
    assert weight_sizes(path) == {"transformer": 600, "t5xxl": 400, "vae": 10}
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8)}, tmp_path / "sd.safetensors")
    assert set(weight_sizes(tmp_path / "sd.safetensors")) == {"checkpoint"}


def test_the_plan_follows_the_largest_part_and_the_total():
    parts = {"transformer": 10 * GIB, "text_encoder_2": 5 * GIB, "vae": GIB}
    assert plan_memory(17.0 * GIB, parts).mode == FULL  # 16 GiB of weights + 1 GiB of activations
    assert plan_memory(16.9 * GIB, parts).mode == MODEL_OFFLOAD
    assert plan_memory(11.0 * GIB, parts).mode == MODEL_OFFLOAD  # the transformer alone + activations
    assert plan_memory(10.9 * GIB, parts, blocker=NO_TORCHAO).mode == SEQUENTIAL
    plan = plan_memory(12 * GIB, parts)
    assert (plan.model_gib, plan.need_gib, plan.free_gib) == (16, 11, 12) and "model CPU offload" in plan.line()


def test_an_8_bit_transformer_and_t5_halve_their_share():
    small = quantized_parts(FLUX_DEV)
    assert all(small[part] == FLUX_DEV[part] // 2 for part in ("transformer", "text_encoder_2"))
    assert small["text_encoder"] == FLUX_DEV["text_encoder"]  # CLIP stays
    assert plan_memory(23.5 * GIB, small).mode == FULL and plan_memory(15.5 * GIB, small).mode == MODEL_OFFLOAD


def test_weight_sizes_come_from_the_files(tmp_path):
    for part, count in (("transformer", 3000), ("vae", 500)):
        (tmp_path / part).mkdir()
        save_file({"w": torch.zeros(count)}, tmp_path / part / "diffusion_pytorch_model.safetensors")
        (tmp_path / part / "config.json").write_text("{}")  # not a weight file
    sizes = weight_sizes(tmp_path)
    assert sizes == {p: (tmp_path / p / "diffusion_pytorch_model.safetensors").stat().st_size for p in sizes}
    assert set(sizes) == {"transformer", "vae"} and sizes["transformer"] > 3000 * 4
    single = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(10)}, single)
    assert weight_sizes(single, [tmp_path / "vae" / "diffusion_pytorch_model.safetensors"]) == {
        "checkpoint": single.stat().st_size, "diffusion_pytorch_model": sizes["vae"]
    }
    assert weight_sizes("black-forest-labs/FLUX.1-dev") == FLUX_DEV  # a known hub id without files
    assert weight_sizes("someone/unknown-model") == {}


class FakePipe:
    """Records the placement calls; its components weigh what ``sizes`` says (float32 parameters); ``quantized``:
    its transformer says it was loaded through torchao, as diffusers marks a quantized model."""

    def __init__(self, sizes: dict[str, int], quantized: bool = False):
        self.components = {name: torch.nn.Linear(size // 4, 1, bias=False) for name, size in sizes.items()}
        if quantized:
            config = type("Config", (), {"quant_method": "torchao"})()
            self.components["transformer"].hf_quantizer = type("Quantizer", (), {"quantization_config": config})()
        self.transformer = self.components.get("transformer")
        self.calls: list[str] = []

    def to(self, device):
        self.calls.append(f"to {device}")

    def enable_model_cpu_offload(self):
        self.calls.append(MODEL_OFFLOAD)

    def enable_sequential_cpu_offload(self):
        self.calls.append(SEQUENTIAL)


@pytest.mark.parametrize("free, call", [(2 * GIB, "to cuda"), (GIB + 2500, MODEL_OFFLOAD), (GIB, SEQUENTIAL)])
def test_place_does_what_the_plan_says(free, call):
    pipe = FakePipe({"transformer": 2000, "text_encoder": 1000})
    said = place(pipe, DevicePlan("cuda", torch.float16), Settings(), free_bytes=free)
    assert pipe.calls == [call]
    assert (said == "") == (call == "to cuda") and (call in said or call == "to cuda")


def test_place_says_the_transformer_is_8_bit_and_does_not_plan_it_again():
    pipe = FakePipe({"transformer": 2000, "text_encoder": 1000}, quantized=True)
    assert QUANTIZED_TRANSFORMER in devices.module_sizes(pipe)
    said = place(pipe, DevicePlan("cuda", torch.float16), Settings(), free_bytes=GIB + 2500)
    assert pipe.calls == [MODEL_OFFLOAD] and "with an 8-bit transformer" in said
    plain = FakePipe({"transformer": 2000, "text_encoder": 1000})
    assert "8-bit" not in place(plain, DevicePlan("cuda", torch.float16), Settings(), free_bytes=GIB + 2500)


def test_cpu_offload_setting_and_the_cpu_bypass_the_plan():
    pipe = FakePipe({"transformer": 2000})
    place(pipe, DevicePlan("cuda", torch.float16), Settings(cpu_offload=True), free_bytes=100 * GIB)
    place(pipe, DevicePlan("cpu", torch.float32), Settings(), free_bytes=0)
    assert pipe.calls == [MODEL_OFFLOAD, "to cpu"]


def test_the_page_line_says_the_default_models_plan_on_a_gpu(monkeypatch):
    monkeypatch.setattr(devices, "gpu_free_bytes", lambda: 23.5 * GIB)
    line = describe_plan(Settings(dtype="bfloat16"), DevicePlan("cuda", torch.bfloat16), FLUX_DEV)
    assert "model CPU offload" in line and "23.5 GB free" in line
    assert "offload" not in describe_plan(Settings(), DevicePlan("cpu", torch.float32), FLUX_DEV)


def test_the_table_is_computed_from_the_sizes():
    table = rows({"FLUX.1-dev": FLUX_DEV})
    assert table[2].startswith("| FLUX.1-dev bf16 | 31.4 |") and table[2].endswith(
        "| sequential | sequential | sequential | model offload | full | full |"
    )
    assert table[3].startswith("| FLUX.1-dev bf16 + torchao | 31.4 |") and table[3].endswith(
        "| sequential | sequential | 8-bit + offload | model offload | full | full |"
    )
