"""Benchmark: switching ControlNets in SD Studio against plain diffusers loading a pipeline per control type.

    python bench/bench_controlnet.py [--model NAME] [--types canny,depth,pose] [--rounds 3]

SD Studio loads the base model once and each ControlNet once, and attaches ControlNets to pipelines derived with
``from_pipe``. The plain way — ``StableDiffusionControlNetPipeline.from_pretrained(base, controlnet=...)`` each
time the control type changes — reads the base weights again on every switch and, if the pipelines are kept,
holds one copy of them per control type. One run prints, side by side:

- the time of a control-type switch (ours: warm, the ControlNet loaded before; plain: a pipeline load), and
- the parameter memory with every control type ready (unique tensor storage, counted by ``data_ptr``), and
- a generation with guidance end 0.5: diffusers runs the ControlNet on every step and multiplies its output by 0
  after the end; SD Studio skips those steps (same picture).

Offline; the tiny model (three random-weight ControlNets) by default, or ``--model "Demo shapes (offline)"
--types canny``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from backend import ControlNetRequest, ControlUnit, Engine, Settings  # noqa: E402
from backend.generation.samplers import build_scheduler  # noqa: E402
from backend.models.loaders import resolve_source  # noqa: E402

MODEL = "Tiny (offline test model)"


def parameter_bytes(*pipes) -> int:
    """Bytes of distinct parameter storage across pipelines (shared modules count once)."""
    seen: dict[int, int] = {}
    for pipe in pipes:
        for module in pipe.components.values():
            for p in getattr(module, "parameters", lambda: [])():
                seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--types", default="canny,depth,pose")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    types = [t.strip() for t in args.types.split(",")]

    engine = Engine(Settings.from_env(offline=True, save_outputs=False))
    spec = engine.registry.get(args.model)
    settings, plan = engine.settings, engine.cache.plan
    base_source = resolve_source(spec.name, spec.source, settings)
    cn_sources = {t: resolve_source(t, spec.controlnet(t) or "", settings, marker="config.json") for t in types}

    start = time.perf_counter()
    engine.cache.model(args.model)
    first_load = time.perf_counter() - start
    ours_pipes = [engine.cache.pipeline(args.model, "txt2img", (t,)) for t in types]  # warm every ControlNet

    def plain_pipeline(control_type: str):
        controlnet = ControlNetModel.from_pretrained(cn_sources[control_type], dtype=plan.dtype, local_files_only=True)
        return StableDiffusionControlNetPipeline.from_pretrained(
            base_source, controlnet=controlnet, dtype=plan.dtype, local_files_only=True, safety_checker=None
        ).to(plan.device)

    ours_best, plain_best = float("inf"), float("inf")
    for _ in range(args.rounds):
        for control_type in types:  # interleaved, so load drift hits both alike
            start = time.perf_counter()
            engine.cache.model(args.model).derived.clear()  # ours without the derived-pipeline cache: from_pipe
            engine.cache.pipeline(args.model, "txt2img", (control_type,))
            ours_best = min(ours_best, time.perf_counter() - start)
            start = time.perf_counter()
            plain_pipeline(control_type)
            plain_best = min(plain_best, time.perf_counter() - start)

    ours_pipes = [engine.cache.pipeline(args.model, "txt2img", (t,)) for t in types]
    plain_pipes = [plain_pipeline(t) for t in types]

    # A generation that uses the ControlNet for the first half of the steps only.
    width, height = spec.defaults.width, spec.defaults.height
    control_map = Image.new("RGB", (width, height), "black")
    ImageDraw.Draw(control_map).rectangle([width // 4, height // 4, width * 3 // 4, height * 3 // 4], outline="white")
    unit = ControlUnit(image=control_map, control_type=types[0], preprocessor="none", guidance_end=0.5)
    request = ControlNetRequest(
        prompt="a red circle on a blue background",
        seed=1,
        steps=args.steps,
        guidance_scale=spec.defaults.guidance_scale,
        width=width,
        height=height,
        sampler="Euler",
        schedule="Automatic",
        model=args.model,
        units=(unit,),
    )
    plain = plain_pipes[0]
    plain.set_progress_bar_config(disable=True)

    def plain_run():
        plain.scheduler = build_scheduler(engine.cache.model(args.model).scheduler_config, "Euler", "Automatic")
        return plain(
            request.prompt,
            image=control_map,
            num_inference_steps=args.steps,
            guidance_scale=request.guidance_scale,
            width=width,
            height=height,
            control_guidance_end=0.5,
            generator=torch.Generator().manual_seed(1),
        ).images[0]

    run_ours, run_plain = float("inf"), float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        ours_image = engine.run(request).images[0]
        run_ours = min(run_ours, time.perf_counter() - start)
        start = time.perf_counter()
        plain_image = plain_run()
        run_plain = min(run_plain, time.perf_counter() - start)
    same = np.array_equal(np.asarray(ours_image), np.asarray(plain_image))
    ours_bytes, plain_bytes = parameter_bytes(*ours_pipes), parameter_bytes(*plain_pipes)
    print(f"model {args.model}, control types {', '.join(types)}, device {plan.device}")
    print(f"first base load {first_load:.2f} s")
    print(f"{'':34} {'SD Studio':>12} {'plain diffusers':>16} {'ratio':>7}")
    print(f"{'control-type switch (best, s)':34} {ours_best:12.4f} {plain_best:16.4f} {ours_best / plain_best:7.3f}")
    print(
        f"{'parameters, all types ready (MB)':34} {ours_bytes / 1e6:12.1f} {plain_bytes / 1e6:16.1f} "
        f"{ours_bytes / plain_bytes:7.3f}"
    )
    print(
        f"{f'{args.steps} steps, guidance end 0.5 (s)':34} {run_ours:12.4f} {run_plain:16.4f} "
        f"{run_ours / run_plain:7.3f}   same picture: {same}"
    )


if __name__ == "__main__":
    main()
