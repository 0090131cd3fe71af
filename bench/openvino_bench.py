"""Benchmark: the OpenVINO backend (``--backend openvino``) against torch on the CPU.

    python -m bench openvino [--model sd15|demo|tiny] [--size 256] [--steps 4] [--batches 1 2] [--rounds 2]
                             [--guidance 7]

Rows, in one run, in alternating rounds (load drift hits every row alike), medians of wall and CPU time per
txt2img call (text encoder + steps + VAE decode): plain diffusers fp32; torch at SD Studio's CPU default precision
(bf16 where the CPU has native bf16, else fp32; a bare call, the engine's own overhead is measured by bench_speed);
OpenVINO f32; OpenVINO bf16 where the CPU has bf16; and "SD Studio default (auto)": what the app's default backend
runs on a second start with the model (the first start, timed apart, converted it in the background and measured it
at this bench's shape; the second reads both). The OpenVINO rows patch the same pipeline the app's way
(backend/models/openvino_unet.attach), without copying weights: the UNet is converted once from the fp32 weights
(bf16 is OpenVINO's inference precision hint, so both rows share the conversion; the second reads it from the
cache), the text encoder and VAE are the torch row's at the same precision. Their conversion + compile time and first
call are reported apart. Each row's
mean pixel difference (0-255) against diffusers fp32 is printed beside it. ``--model sd15`` is SD 1.5's
architecture with random weights (bench_speed.build_sd15); ``--model demo`` the shipped demo model; ``--model tiny``
the built-in test model.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import gc
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from backend.generation.samplers import build_scheduler
from backend.models import openvino_unet, tiny
from backend.models.devices import DevicePlan, cpu_bf16_flags
from backend.settings import Settings
from bench.bench_speed import RESULTS, build_demo, build_sd15

PROMPT, SEED = "a red circle on a blue background", 1234


def build_tiny() -> StableDiffusionPipeline:
    """The built-in tiny test model (builtin:tiny), as plain diffusers loads it."""
    folder = Path(tempfile.mkdtemp(prefix="ov-bench-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    folder = tiny.ensure(folder / "tiny")
    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)


def timed(call: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU seconds (all the process's threads: torch's and OpenVINO's) of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def make_call(pipe, args, batch: int) -> Callable[[], np.ndarray]:
    def call() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(SEED)
        with torch.inference_mode():
            images = pipe(
                [PROMPT] * batch,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                width=args.size,
                height=args.size,
                generator=generator,
                output_type="np",
            ).images
        return (np.asarray(images) * 255).round()

    return call


def shell(module: torch.nn.Module, **children: torch.nn.Module) -> torch.nn.Module:
    """A module object sharing ``module``'s weights (its own ``forward`` can be replaced), with ``children`` swapped."""
    copied = copy.copy(module)
    copied._modules = {**module._modules, **children}
    return copied


def openvino_pipe(weights, torch_side, cache: Path, dtype: torch.dtype) -> tuple[StableDiffusionPipeline, dict]:
    """An OpenVINO row's pipeline: the UNet from ``weights`` (fp32: every row reuses its one conversion, the
    precision is OpenVINO's inference hint), text encoder and VAE from the torch pipeline at ``dtype``; no weights
    are copied (SD 1.5 would need GBs per row)."""
    vae = shell(torch_side.vae, decoder=shell(torch_side.vae.decoder))
    pipe = StableDiffusionPipeline(**{**torch_side.components, "unet": shell(weights.unet), "vae": vae})
    settings = Settings(backend="openvino", cache_dir=cache)
    wall, cpu, notes = timed(lambda: openvino_unet.attach(pipe, settings, DevicePlan("cpu", dtype)))
    gc.collect()
    return pipe, {"convert_s": (wall, cpu), "notes": notes}


def auto_pipe(torch_side, cache: Path, dtype: torch.dtype, args) -> tuple[StableDiffusionPipeline, dict]:
    """The app's default (``--backend auto``) on a second start: a first start converts in the background and its
    first request measures both backends; the row's pipeline is a second start's, reading the conversion and the
    measurement (all on pipelines sharing ``torch_side``'s weights)."""
    settings, plan = Settings(backend="auto", cache_dir=cache), DevicePlan("cpu", dtype)

    def shells() -> StableDiffusionPipeline:
        vae = shell(torch_side.vae, decoder=shell(torch_side.vae.decoder))
        pipe = StableDiffusionPipeline(**{**torch_side.components, "unet": shell(torch_side.unet), "vae": vae})
        pipe.scheduler = build_scheduler(dict(torch_side.scheduler.config), "Euler", "Automatic")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def first_start() -> None:
        first = shells()
        openvino_unet.attach(first, settings, plan)
        job = openvino_unet.converting(first.unet)
        if job is not None:  # the conversion auto starts on a model's first load
            job.done.wait()
            openvino_unet.take_ready(first)  # what the engine does before the next request
        make_call(first, args, args.batches[0])()  # that request: auto measures its first UNet call on both

    wall, cpu, _ = timed(first_start)
    second = shells()
    notes = openvino_unet.attach(second, settings, plan)
    return second, {"convert_s": (wall, cpu), "notes": notes}


def disk_use(root: Path) -> str:
    """Per cache entry: the converted model's size and each precision's compiled blobs (what deploy.md states)."""

    def size(path: Path) -> float:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9

    entries = [p for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    described = []
    for entry in entries:
        compiled = [f"{p.name} {size(p):.2f} GB" for p in sorted(entry.glob("compiled-*"))]
        described.append(
            f"{entry.name[:8]}: converted {(entry / 'model.bin').stat().st_size / 1e9:.2f} GB, " + ", ".join(compiled)
        )
    return "; ".join(described) or "empty"


def variants(base, args) -> dict[str, dict]:
    """Row name → {pipe, convert_s (wall, cpu)}; the OpenVINO rows are converted here, each timed."""
    bf16 = bool(cpu_bf16_flags())
    rows = {"diffusers fp32": {"pipe": base}}
    default = "bf16" if bf16 else "fp32"
    studio = copy.deepcopy(base).to(torch.bfloat16) if bf16 else base
    rows[f"torch {default}"] = {"pipe": studio}  # SD Studio's default before OpenVINO
    cache = Path(tempfile.mkdtemp(prefix="ov-bench-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)  # converted models are GBs for SD 1.5
    for name, torch_side, dtype in [("OpenVINO f32", base, torch.float32), ("OpenVINO bf16", studio, torch.bfloat16)][
        : 2 if bf16 else 1
    ]:
        pipe, row = openvino_pipe(base, torch_side, cache, dtype)
        wall, cpu = row["convert_s"]
        print(f"{name}: converted + compiled in {wall:.1f} s wall, {cpu:.1f} s CPU ({', '.join(row['notes'])})")
        rows[name] = {"pipe": pipe, **row}
    pipe, row = auto_pipe(studio, cache, torch.bfloat16 if bf16 else torch.float32, args)
    wall, cpu = row["convert_s"]
    print(f"SD Studio default (auto): first start (background conversion + measuring request) {wall:.1f} s wall")
    print(f"SD Studio default (auto): a second start chose: {'; '.join(row['notes'])}")
    rows["SD Studio default (auto)"] = {"pipe": pipe, **row}
    print(f"disk use of the OpenVINO cache: {disk_use(cache / 'openvino')}")
    for row in rows.values():
        row["pipe"].scheduler = build_scheduler(dict(base.scheduler.config), "Euler", "Automatic")
        row["pipe"].set_progress_bar_config(disable=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenVINO vs torch on the CPU")
    parser.add_argument("--model", choices=("sd15", "demo", "tiny"), default="sd15")
    parser.add_argument("--size", type=int, default=None, help="256 for sd15, 64 for demo")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=7.0, help="CFG scale; 0 = one UNet pass a step (SD-Turbo)")
    args = parser.parse_args(argv)
    args.size = args.size or {"sd15": 256, "demo": 64, "tiny": 64}[args.model]
    builders = {"sd15": build_sd15, "demo": build_demo, "tiny": build_tiny}
    base = builders[args.model]().to(torch.float32)
    rows = variants(base, args)
    report: dict[str, dict] = {}
    for batch in args.batches:
        calls = {name: make_call(row["pipe"], args, batch) for name, row in rows.items()}
        first = {name: timed(call) for name, call in calls.items()}  # warm-up: OpenVINO's first inference
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                wall, cpu, _ = timed(call)
                times[name].append((wall, cpu))
        reference = first["diffusers fp32"][2]
        torch_default = next(first[name][2] for name in first if name.startswith("torch "))
        shape = f"{args.model} {args.size}x{args.size}, {args.steps} steps, CFG {args.guidance:g}, batch {batch}"
        print(f"\n{shape}, median of {args.rounds}:")
        base_wall = statistics.median(w for w, _ in times["diffusers fp32"])
        for name in calls:
            wall = statistics.median(w for w, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            diff = float(np.abs(first[name][2] - reference).mean())
            same = torch_default if "bf16" in name or "auto" in name else reference  # torch at the same precision
            same_diff = float(np.abs(first[name][2] - same).mean())
            print(
                f"  {name:26s} {wall:7.2f} s wall {cpu:7.2f} s CPU  x{base_wall / wall:4.2f} vs fp32  "
                f"first call {first[name][0]:6.2f} s  mean pixel diff {diff:5.2f} "
                f"(vs torch at the same precision {same_diff:4.2f})"
            )
            report[f"{name} batch {batch}"] = {
                "wall": wall,
                "cpu": cpu,
                "first": first[name][0],
                "diff": diff,
                "same_precision_diff": same_diff,
            }
    for name, row in rows.items():
        if "convert_s" in row:
            report[f"{name} conversion"] = {"wall": row["convert_s"][0], "cpu": row["convert_s"][1]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"openvino-{args.model}-{args.size}.json").write_text(json.dumps(report, indent=1))
