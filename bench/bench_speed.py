"""Benchmark: SD Studio's txt2img against a bare diffusers call, and each precision against fp32.

    python bench/bench_speed.py [--size 256] [--steps 4] [--rounds 3] [--cfg 7] [--no-bf16]
    python bench/bench_speed.py --size 512        # the 512x512 workload

The workload is the SD 1.5 architecture (UNet, VAE and CLIP text encoder built from SD 1.5's published configs)
with random weights: the cost of a step does not depend on the weight values, and nothing is downloaded. In one
run, side by side, in alternating rounds (load drift hits every variant alike), medians:

1. SD Studio's engine (validation, cache, callbacks, saving off) vs a bare ``StableDiffusionPipeline`` call with
   the same components, scheduler, seed and steps, in fp32: the engine's overhead.
2. bf16 (all modules) vs fp32, bare and through the engine, with its quality cost beside it: max and mean pixel
   difference (0-255) against the fp32 picture.
3. UNet efficiency: FLOPs of one UNet evaluation (torch's FLOP counter) ÷ the step time, as a fraction of this
   machine's matmul throughput measured in the same run, per precision.

Results are printed as ratios and written as JSON and a bar chart (PNG) to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from backend import tiny  # noqa: E402
from backend.devices import cpu_bf16_flags, describe_plan, plan_device  # noqa: E402
from backend.engine import Engine, generators  # noqa: E402
from backend.models import ModelRegistry  # noqa: E402
from backend.pipelines import PipelineCache  # noqa: E402
from backend.requests import Txt2ImgRequest  # noqa: E402
from backend.samplers import build_scheduler  # noqa: E402
from backend.settings import Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT, NEGATIVE, SEED, SAMPLER = "a red circle on a blue background", "blurry", 1234, "Euler"

# SD 1.5's published configs (runwayml/stable-diffusion-v1-5 unet/, vae/, text_encoder/ config.json), the fields
# that set the architecture; the rest are the libraries' defaults, which match.
UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
VAE_CONFIG = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
}
TEXT_CONFIG = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}


def build_sd15() -> StableDiffusionPipeline:
    """SD 1.5's architecture with random weights (the tokenizer is the built-in offline one; cost is the same)."""
    torch.manual_seed(0)
    tokenizer = tiny.build_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_CONFIG,
    )
    # Random init scaled down so the random UNet's output stays finite over the steps (values do not change cost).
    unet = UNet2DConditionModel(**UNET_CONFIG)
    with torch.no_grad():
        for param in unet.parameters():
            param.mul_(0.5)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE_CONFIG),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny.build_components()["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to("cpu")


def engine_for(pipe: StableDiffusionPipeline, dtype: str) -> tuple[Engine, str]:
    """An engine whose default model is ``pipe`` (loaded through the engine's own cache and options)."""
    settings = Settings.from_env(offline=True, save_outputs=False, preview_every=0, dtype=dtype)
    registry = ModelRegistry.load(settings.models_file)
    cache = PipelineCache(registry, settings, loader=lambda spec, s, plan: pipe)
    engine = Engine(settings, registry, cache)
    return engine, settings.offline_model


def bare(pipe: StableDiffusionPipeline, args) -> Image.Image:
    pipe.scheduler = build_scheduler(dict(pipe.scheduler.config), SAMPLER)
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=args.steps,
        guidance_scale=args.cfg,
        width=args.size,
        height=args.size,
        generator=generators(SEED, 1),
    ).images[0]


def through_engine(engine: Engine, model: str, args) -> Image.Image:
    request = Txt2ImgRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=SEED,
        steps=args.steps,
        guidance_scale=args.cfg,
        width=args.size,
        height=args.size,
        sampler=SAMPLER,
        model=model,
    )
    return engine.run(request).images[0]


def matmul_flops_per_s(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def unet_flops(pipe: StableDiffusionPipeline, args) -> int:
    """FLOPs of one UNet evaluation as the pipeline makes it (CFG batch of 2 when guided)."""
    batch = 2 if args.cfg > 1 else 1
    unet = pipe.unet
    latent = torch.zeros(batch, 4, args.size // 8, args.size // 8, dtype=unet.dtype)
    context = torch.zeros(batch, 77, 768, dtype=unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(latent, 500, context)
    return counter.get_total_flops()


def difference(image: Image.Image, reference: Image.Image) -> tuple[int, float]:
    delta = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    return int(delta.max()), float(delta.mean())


def chart(rows: list[dict], title: str, path: Path) -> None:
    """A horizontal bar chart of speed vs the fp32 baseline (PIL only)."""
    width, bar, left = 760, 34, 300
    image = Image.new("RGB", (width, 60 + bar * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    top = max(row["speedup_vs_fp32"] for row in rows)
    for i, row in enumerate(rows):
        y = 40 + i * bar
        length = int((width - left - 80) * row["speedup_vs_fp32"] / top)
        draw.text((10, y + 8), row["name"], fill="black")
        draw.rectangle((left, y + 4, left + length, y + bar - 6), fill=(70, 110, 200))
        draw.text((left + length + 6, y + 8), f"{row['speedup_vs_fp32']:.2f}x", fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only")
    args = parser.parse_args()

    fp32 = build_sd15()
    pipes = {"float32": fp32}
    if not args.no_bf16:
        pipes["bfloat16"] = copy.deepcopy(fp32).to(dtype=torch.bfloat16)
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    variants = {}
    for dtype, pipe in pipes.items():
        short = "fp32" if dtype == "float32" else "bf16"
        engine, model = engine_for(pipe, dtype)
        variants[f"diffusers {short}"] = (dtype, lambda pipe=pipe: bare(pipe, args))
        variants[f"SD Studio {short}"] = (dtype, lambda engine=engine, model=model: through_engine(engine, model, args))

    images: dict[str, Image.Image] = {}
    for name, (_, run) in variants.items():  # warm-up, and the pictures compared
        images[name] = run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_, run) in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    peak = {dtype: matmul_flops_per_s(pipe.dtype) for dtype, pipe in pipes.items()}
    flops = {dtype: unet_flops(pipe, args) for dtype, pipe in pipes.items()}
    baseline = statistics.median(times["diffusers fp32"])
    rows = []
    for name, (dtype, _) in variants.items():
        seconds = statistics.median(times[name])
        max_diff, mean_diff = difference(images[name], images["diffusers fp32"])
        step = seconds / args.steps
        rows.append(
            {
                "name": name,
                "dtype": dtype,
                "seconds": seconds,
                "seconds_per_step": step,
                "speedup_vs_fp32": baseline / seconds,
                "max_pixel_diff_vs_fp32": max_diff,
                "mean_pixel_diff_vs_fp32": mean_diff,
                # Whole-step time includes the scheduler; the text encoder and VAE are spread over the steps too.
                "unet_fraction_of_matmul_peak": flops[dtype] / step / peak[dtype],
            }
        )
    overhead = {
        short: statistics.median(times[f"SD Studio {short}"]) / statistics.median(times[f"diffusers {short}"])
        for short in ("fp32", "bf16")
        if f"diffusers {short}" in times
    }

    auto = describe_plan(Settings(device="cpu"), plan_device(Settings(device="cpu")))
    header = (
        f"SD 1.5 architecture (random weights), {args.size}x{args.size}, {args.steps} steps {SAMPLER}, CFG "
        f"{args.cfg:g}, CPU, torch threads {torch.get_num_threads()}; median of {args.rounds} alternating rounds"
    )
    print(header)
    print(f"dtype auto here: {auto}\n")
    print(f"{'':18}{'s/image':>9}{'s/step':>8}{'vs fp32':>9}{'max diff':>10}{'mean diff':>11}{'UNet/peak':>11}")
    for row in rows:
        print(
            f"{row['name']:18}{row['seconds']:9.2f}{row['seconds_per_step']:8.2f}{row['speedup_vs_fp32']:8.2f}x"
            f"{row['max_pixel_diff_vs_fp32']:10d}{row['mean_pixel_diff_vs_fp32']:11.2f}"
            f"{row['unet_fraction_of_matmul_peak']:10.0%}"
        )
    print()
    for short, ratio in overhead.items():
        print(f"engine overhead, {short}: SD Studio / diffusers = {ratio:.3f}x")
    for dtype in pipes:
        gflop, gflops = flops[dtype] / 1e9, peak[dtype] / 1e9
        print(f"{dtype}: UNet {gflop:.0f} GFLOP per evaluation; matmul peak {gflops:.0f} GFLOP/s")

    RESULTS.mkdir(exist_ok=True)
    stem = f"speed_{args.size}"
    result = {
        "workload": header,
        "dtype_auto": auto,
        "cpu_bf16_flags": cpu_bf16_flags(),
        "rows": rows,
        "engine_overhead": overhead,
        "unet_gflop_per_eval": {d: f / 1e9 for d, f in flops.items()},
        "matmul_peak_gflops": {d: p / 1e9 for d, p in peak.items()},
        "times": times,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    chart(rows, f"speed vs diffusers fp32: {args.size}x{args.size}, {args.steps} steps, CPU", RESULTS / f"{stem}.png")
    print(f"\nwrote {RESULTS / stem}.json and .png")


if __name__ == "__main__":
    main()
