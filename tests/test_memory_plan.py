"""The memory plan (backend.models.devices): which placement a model gets for a GPU's free memory, with faked
free-memory numbers and a fake pipeline that records what was asked of it (no GPU needed)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from backend.models import devices
from backend.models.devices import (
    FULL,
    GIB,
    MODEL_OFFLOAD,
    SEQUENTIAL,
    STATED_SIZES,
    DevicePlan,
    describe_plan,
    place,
    plan_memory,
    quantized_parts,
    weight_sizes,
)
from backend.settings import Settings
from bench.memory_table import rows

FLUX_DEV = STATED_SIZES["black-forest-labs/FLUX.1-dev"]


@pytest.mark.parametrize(
    "free_gib, mode", [(79.5, FULL), (47.5, FULL), (23.5, MODEL_OFFLOAD), (15.5, SEQUENTIAL), (7.5, SEQUENTIAL)]
)
def test_flux_dev_at_bf16_fits_whole_only_above_24_gb(free_gib, mode):
    assert plan_memory(free_gib * GIB, FLUX_DEV).mode == mode


def test_the_plan_follows_the_largest_part_and_the_total():
    parts = {"transformer": 10 * GIB, "text_encoder_2": 5 * GIB, "vae": GIB}
    assert plan_memory(17.0 * GIB, parts).mode == FULL  # 16 GiB of weights + 1 GiB of activations
    assert plan_memory(16.9 * GIB, parts).mode == MODEL_OFFLOAD
    assert plan_memory(11.0 * GIB, parts).mode == MODEL_OFFLOAD  # the transformer alone + activations
    assert plan_memory(10.9 * GIB, parts).mode == SEQUENTIAL
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
    """Records the placement calls; its components weigh what ``sizes`` says (float32 parameters)."""

    def __init__(self, sizes: dict[str, int]):
        self.components = {name: torch.nn.Linear(size // 4, 1, bias=False) for name, size in sizes.items()}
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
