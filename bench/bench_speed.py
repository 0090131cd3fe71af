"""Benchmark: SD Studio's txt2img against a bare diffusers call, each speed option against fp32, memory.

    python bench/bench_speed.py [--size 256] [--steps 4] [--rounds 3] [--cfg 7] [--skip-cfg 0.5]
    python -m bench                                # the same
    python bench/bench_speed.py --size 512        # the 512x512 workload
    python bench/bench_speed.py --no-memory       # speed only (the memory part saves ~2.5 GB of weights to /tmp)
    python bench/bench_speed.py --model demo      # the shipped demo model (64x64, 20 steps unless set)
    python bench/bench_speed.py --device cuda     # on a GPU (the default where one is present): fp32 vs fp16
    python bench/bench_speed.py --compile         # add a torch.compile row (the compile time printed beside it)

The workload is the SD 1.5 architecture (UNet, VAE and CLIP text encoder built from SD 1.5's published configs)
with random weights: the cost of a step does not depend on the weight values, and nothing is downloaded; or, with
``--model demo``, the shipped demo model. In one run, side by side, in alternating rounds (load drift hits every
variant alike), medians:

1. SD Studio's engine (validation, cache, step callbacks, a live preview every step, saving the PNG) vs a bare
   ``StableDiffusionPipeline`` call with the same components, scheduler, seed and steps, in the same precision:
   the engine's overhead.
2. Each speed option vs diffusers fp32, with its quality cost beside it: max and mean pixel difference (0-255)
   against the fp32 picture. Options: the device's fast precision (bf16 on a CPU, the default there where it is
   native; fp16 on a GPU, its default), "skip CFG after" a fraction of the steps, DeepCache step caching (alone
   and with skip CFG), the UNet in channels_last
   layout, and with ``--compile`` the UNet compiled by torch.compile as the app's option does it. The VAE's
   precision is measured on its own (decode time and difference).
3. UNet efficiency: FLOPs of one UNet evaluation (torch's FLOP counter) ÷ the step time, as a fraction of this
   machine's matmul throughput measured in the same run, per precision.
4. Memory (a fresh process, the engine's own loader on the weights saved to a temporary folder, default dtype):
   resident memory with txt2img ready vs with img2img, inpaint and ControlNet ready too (the ControlNet's own
   weights stated beside it), and after 5 model switches vs after the first load; on a GPU the same for CUDA
   memory (allocated, and the peak of the run).
5. The live preview's cost per step, and the tab switch (the img2img pipeline derived from the loaded model).

Results are printed as ratios and written as JSON and a bar chart (PNG) to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from backend import ControlNetRequest, ControlUnit, Engine, Img2ImgRequest, InpaintRequest, Settings, Txt2ImgRequest  # noqa: E402
from backend.generation.pipeline_call import generators  # noqa: E402
from backend.generation.preview import latents_to_rgb  # noqa: E402
from backend.generation.samplers import build_scheduler  # noqa: E402
from backend.models import tiny  # noqa: E402
from backend.models.devices import (  # noqa: E402
    DTYPES,
    compile_unet,
    cpu_bf16_flags,
    describe_plan,
    dtype_name,
    plan_device,
)
from backend.models.pipelines import PipelineCache  # noqa: E402
from backend.models.registry import ModelRegistry  # noqa: E402
from backend.schema.samplers import DEFAULT_SCHEDULE  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # row names
FAST = {"cpu": "bfloat16", "cuda": "float16"}  # the fast precision each device is measured in beside fp32
PROMPT, NEGATIVE, SEED, SAMPLER = "a red circle on a blue background", "blurry", 1234, "Euler"
SCHEDULE = DEFAULT_SCHEDULE  # the app's default (Karras); the bare call is given the same one

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


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it measures the work (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


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


def build_demo() -> StableDiffusionPipeline:
    """The shipped demo model, loaded as plain diffusers loads it."""
    folder = Path(__file__).resolve().parent.parent / "models" / "demo"
    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None).to("cpu")


def engine_for(pipe: StableDiffusionPipeline, dtype: str, output_dir: Path, device: str) -> tuple[Engine, str]:
    """An engine whose default model is ``pipe`` (loaded through the engine's own cache and options), with a live
    preview every step and saving on, as a user runs it."""
    settings = Settings.from_env(offline=True, output_dir=output_dir, preview_every=1, dtype=dtype, device=device)
    registry = ModelRegistry.load(settings.models_file)
    cache = PipelineCache(registry, settings, loader=lambda spec, s, plan: pipe)
    engine = Engine(settings, registry, cache)
    return engine, settings.offline_model


def bare(pipe: StableDiffusionPipeline, args) -> Image.Image:
    pipe.scheduler = build_scheduler(dict(pipe.scheduler.config), SAMPLER, SCHEDULE)
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=args.steps,
        guidance_scale=args.cfg,
        width=args.size,
        height=args.size,
        generator=generators(SEED, 1),
    ).images[0]


def through_engine(engine: Engine, model: str, args, **fields) -> Image.Image:
    request = Txt2ImgRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=SEED,
        steps=args.steps,
        guidance_scale=args.cfg,
        width=args.size,
        height=args.size,
        sampler=SAMPLER,
        schedule=SCHEDULE,
        model=model,
        **fields,
    )
    return engine.run(request, on_step=lambda event: None).images[0]


def matmul_flops_per_s(dtype: torch.dtype, device: str, n: int = 2048, repeat: int = 5) -> float:
    n = n * 4 if device == "cuda" else n  # a GPU needs a larger product to reach its peak
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    a @ b
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def unet_flops(pipe: StableDiffusionPipeline, args) -> int:
    """FLOPs of one UNet evaluation as the pipeline makes it (CFG batch of 2 when guided)."""
    batch = 2 if args.cfg > 1 else 1
    unet, side = pipe.unet, args.size // pipe.vae_scale_factor
    latent = torch.zeros(batch, unet.config.in_channels, side, side, dtype=unet.dtype, device=unet.device)
    context = torch.zeros(batch, 77, unet.config.cross_attention_dim, dtype=unet.dtype, device=unet.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(latent, 500, context)
    return counter.get_total_flops()


def difference(image: Image.Image, reference: Image.Image) -> tuple[int, float]:
    delta = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    return int(delta.max()), float(delta.mean())


def median_seconds(run, repeat: int, device: str = "cpu") -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def vae_precision(pipes: dict[str, StableDiffusionPipeline], args) -> dict[str, dict[str, float]]:
    """The VAE decode alone in each precision: time, and the pixel difference against the fp32 decode."""
    generator = torch.Generator().manual_seed(SEED)
    side = args.size // next(iter(pipes.values())).vae_scale_factor
    latent = torch.randn(1, 4, side, side, generator=generator).to(args.device)
    pictures, result = {}, {}
    for dtype, pipe in pipes.items():
        vae = pipe.vae

        def decode(vae=vae, processor=pipe.image_processor):
            with torch.no_grad():
                out = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
            return processor.postprocess(out.float(), output_type="pil")[0]

        pictures[dtype] = decode()
        result[dtype] = {"seconds": median_seconds(decode, max(2, args.rounds), args.device)}
    for dtype, entry in result.items():
        entry["max_pixel_diff_vs_fp32"], entry["mean_pixel_diff_vs_fp32"] = difference(
            pictures[dtype], pictures["float32"]
        )
    return result


def preview_seconds(args) -> float:
    """One live preview (latents → RGB at the output size), as the engine makes it after a step."""
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, device=args.device)
    factors = ModelRegistry.load(Settings().models_file).get(Settings().offline_model).latent_rgb_factors
    return median_seconds(lambda: latents_to_rgb(latents, factors, (args.size, args.size)), 50, args.device)


def save_weights(pipe: StableDiffusionPipeline, folder: Path) -> Path:
    """The pipeline and a ControlNet of SD 1.5's shape (``from_unet``) as diffusers folders; the models file."""
    pipe.save_pretrained(folder / "sd15")
    ControlNetModel.from_unet(pipe.unet).save_pretrained(folder / "controlnet")
    entry = {"source": str(folder / "sd15"), "family": "sd15", "controlnets": {"canny": str(folder / "controlnet")}}
    models = json.loads(Settings().models_file.read_text())  # the shipped families (SD 1.5's settings)
    models["models"] = [{**entry, "name": name} for name in ("SD 1.5 (random) A", "SD 1.5 (random) B")]
    path = folder / "models.json"
    path.write_text(json.dumps(models))
    return path


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(models_file: Path, size: int, dtype: str, device: str) -> dict[str, float]:
    """Run in a fresh process: memory with txt2img ready, all tabs ready, after 5 model switches; tab switch time.
    On a GPU the CUDA memory beside the resident memory: allocated at each point, and the run's peak."""
    settings = Settings.from_env(
        offline=True,
        save_outputs=False,
        models_file=models_file,
        default_model="SD 1.5 (random) A",
        max_models=1,
        dtype=dtype,
        device=device,
    )
    engine = Engine(settings)
    picture = Image.new("RGB", (size, size), "gray")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size // 2, size // 2))
    common = dict(prompt=PROMPT, seed=SEED, steps=1, guidance_scale=7.0, width=size, height=size, sampler=SAMPLER)

    result: dict[str, float] = {}

    def settle(point: str) -> None:
        gc.collect()
        result[f"rss_{point}"] = rss_bytes()
        if device == "cuda":
            torch.cuda.synchronize()
            result[f"cuda_{point}"] = torch.cuda.memory_allocated()
            result[f"cuda_peak_{point}"] = torch.cuda.max_memory_allocated()

    engine.run(Txt2ImgRequest(**common, model="SD 1.5 (random) A"))
    settle("txt2img")
    start = time.perf_counter()
    engine.cache.pipeline("SD 1.5 (random) A", "img2img")
    result["tab_switch_seconds"] = time.perf_counter() - start
    engine.run(Img2ImgRequest(**common, image=picture, strength=1.0, model="SD 1.5 (random) A"))
    engine.run(InpaintRequest(**common, image=picture, mask=mask, strength=1.0, model="SD 1.5 (random) A"))
    unit = ControlUnit(image=picture, preprocessor="none")
    engine.run(ControlNetRequest(**common, units=(unit,), model="SD 1.5 (random) A"))
    settle("all_tabs")
    controlnet = engine.cache.controlnet("SD 1.5 (random) A", "canny")
    result["controlnet_bytes"] = sum(p.numel() * p.element_size() for p in controlnet.parameters())
    del controlnet
    for name in ("B", "A", "B", "A", "B"):  # 5 switches; max_models=1 unloads the other each time
        engine.run(Txt2ImgRequest(**common, model=f"SD 1.5 (random) {name}"))
    settle("after_5_switches")
    return result


def memory(pipe: StableDiffusionPipeline, args) -> dict[str, float]:
    """Save the weights, then measure in a fresh process (this one holds the speed part's copies)."""
    with tempfile.TemporaryDirectory(prefix="sdstudio-bench-") as folder:
        models_file = save_weights(pipe, Path(folder))
        dtype = dtype_name(pipe.dtype)
        command = [sys.executable, __file__, "--memory-child", str(models_file), "--size", str(args.size)]
        command += ["--memory-dtype", dtype, "--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the memory measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_memory(mem: dict[str, float], dtype: str) -> None:
    gib = 2**30
    kinds = [("rss", "resident memory")] + ([("cuda", "CUDA memory allocated")] if "cuda_txt2img" in mem else [])
    for kind, label in kinds:
        first, tabs, switched = (mem[f"{kind}_{point}"] for point in ("txt2img", "all_tabs", "after_5_switches"))
        print(
            f"{label} ({dtype}): txt2img ready {first / gib:.2f} GiB; all tabs ready {tabs / gib:.2f} GiB = "
            f"{tabs / first:.3f}x, of which the ControlNet's weights {mem['controlnet_bytes'] / gib:.2f} GiB; "
            f"without them {(tabs - mem['controlnet_bytes']) / first:.3f}x; after 5 model switches "
            f"{switched / gib:.2f} GiB = {switched / first:.3f}x the first load"
        )
    if "cuda_peak_txt2img" in mem:
        print(f"CUDA peak during txt2img {mem['cuda_peak_txt2img'] / gib:.2f} GiB")
    print(f"tab switch (img2img pipeline derived) {mem['tab_switch_seconds'] * 1000:.1f} ms")


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
    parser.add_argument("--model", choices=("sd15", "demo"), default="sd15", help="SD 1.5 random weights or the demo")
    parser.add_argument("--size", type=int, help="default 256 (demo: 64)")
    parser.add_argument("--steps", type=int, help="default 4 (demo: 20)")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-cfg", type=float, default=0.5, help="the 'skip CFG after' fraction measured")
    parser.add_argument("--deep-cache", type=int, default=3, help="the DeepCache interval measured (1: no such row)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp32-only", "--no-bf16", dest="fp32_only", action="store_true", help="fp32 only")
    parser.add_argument(
        "--fast-dtype", choices=("bfloat16", "float16"), help="beside fp32 (default: bfloat16 on CPU, float16 on GPU)"
    )
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row (compiling takes minutes)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory part")
    parser.add_argument("--memory-only", action="store_true", help="only the memory part")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.size, args.memory_dtype, args.device)))
        return

    demo = args.model == "demo"
    args.size = args.size or (64 if demo else 256)
    args.steps = args.steps or (20 if demo else 4)
    fp32 = (build_demo() if demo else build_sd15()).to(args.device)
    pipes = {"float32": fp32}
    fast_dtype = args.fast_dtype or FAST[args.device]
    if not args.fp32_only:
        pipes[fast_dtype] = copy.deepcopy(fp32).to(dtype=DTYPES[fast_dtype])
    # The precision `--dtype auto` runs on this device (bf16 on a CPU with native bf16, fp16 on a GPU) is the one
    # memory is measured in.
    auto_plan = plan_device(Settings(device=args.device))
    default = dtype_name(auto_plan.dtype)
    default = default if default in pipes else "float32"
    if args.memory_only:
        print_memory(memory(pipes[default], args), default)
        return
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    saved = Path(tempfile.mkdtemp(prefix="sdstudio-bench-out-"))  # the engine's PNGs; removed at the end
    variants = {}
    for dtype, pipe in pipes.items():
        short = SHORT[dtype]
        engine, model = engine_for(pipe, dtype, saved, args.device)
        variants[f"diffusers {short}"] = (dtype, lambda pipe=pipe: bare(pipe, args))
        variants[f"SD Studio {short}"] = (dtype, lambda engine=engine, model=model: through_engine(engine, model, args))
    fastest = fast_dtype if fast_dtype in pipes else "float32"
    engine, model = engine_for(pipes[fastest], fastest, saved, args.device)
    fast = f"SD Studio {SHORT[fastest]}"  # the engine in the fastest precision: the base of the option rows
    skip = f"{fast} + skip CFG after {args.skip_cfg:g}"
    variants[skip] = (fastest, lambda: through_engine(engine, model, args, skip_cfg_after=args.skip_cfg))
    if args.deep_cache > 1:
        cached = f"{fast} + DeepCache {args.deep_cache}"
        variants[cached] = (fastest, lambda: through_engine(engine, model, args, deep_cache=args.deep_cache))
        variants[f"{cached} + skip CFG {args.skip_cfg:g}"] = (
            fastest,
            lambda: through_engine(engine, model, args, deep_cache=args.deep_cache, skip_cfg_after=args.skip_cfg),
        )
    layout = copy.deepcopy(pipes[fastest])  # its own copy: the others keep the default layout
    layout.unet.to(memory_format=torch.channels_last)
    layout_engine, layout_model = engine_for(layout, fastest, saved, args.device)
    layout_name = f"{fast} + channels_last"
    variants[layout_name] = (fastest, lambda: through_engine(layout_engine, layout_model, args))
    compile_seconds = None
    if args.compile:  # the app's option (--compile-unet): compiled at load with one pass at the run's size
        compiled = copy.deepcopy(pipes[fastest])
        compile_seconds = compile_unet(compiled.unet, auto_plan, args.size)
        compiled_engine, compiled_model = engine_for(compiled, fastest, saved, args.device)
        variants[f"{fast} + torch.compile"] = (fastest, lambda: through_engine(compiled_engine, compiled_model, args))

    images: dict[str, Image.Image] = {}
    for name, (_, run) in variants.items():  # warm-up, and the pictures compared
        images[name] = run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_, run) in variants.items():
            start = time.perf_counter()
            run()
            sync(args.device)
            times[name].append(time.perf_counter() - start)

    peak = {dtype: matmul_flops_per_s(pipe.dtype, args.device) for dtype, pipe in pipes.items()}
    flops = {dtype: unet_flops(pipe, args) for dtype, pipe in pipes.items()}
    vae = vae_precision(pipes, args)
    preview = preview_seconds(args)
    baseline = statistics.median(times["diffusers fp32"])
    rows = []
    for name, (dtype, _) in variants.items():
        seconds = statistics.median(times[name])
        max_diff, mean_diff = difference(images[name], images["diffusers fp32"])
        step = seconds / args.steps
        # Whole-step time includes the scheduler; the text encoder and VAE are spread over the steps too. A run
        # that skips CFG or caches steps does less UNet work than the counter's one evaluation per step.
        efficiency = flops[dtype] / step / peak[dtype] if "skip CFG" not in name and "DeepCache" not in name else None
        rows.append(
            {
                "name": name,
                "dtype": dtype,
                "seconds": seconds,
                "seconds_per_step": step,
                "speedup_vs_fp32": baseline / seconds,
                "max_pixel_diff_vs_fp32": max_diff,
                "mean_pixel_diff_vs_fp32": mean_diff,
                "unet_fraction_of_matmul_peak": efficiency,
            }
        )
    overhead = {
        short: statistics.median(times[f"SD Studio {short}"]) / statistics.median(times[f"diffusers {short}"])
        for short in SHORT.values()
        if f"diffusers {short}" in times
    }
    step_seconds = statistics.median(times[fast]) / args.steps

    auto = describe_plan(Settings(device=args.device), auto_plan)
    workload = "the demo model" if demo else "SD 1.5 architecture (random weights)"
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, torch threads {torch.get_num_threads()}"
    header = (
        f"{workload}, {args.size}x{args.size}, {args.steps} steps {SAMPLER} {SCHEDULE}, CFG "
        f"{args.cfg:g}, {where}; median of {args.rounds} alternating rounds"
    )
    print(header)
    print(f"dtype auto here: {auto}\n")
    print(f"{'':46}{'s/image':>9}{'s/step':>8}{'vs fp32':>9}{'max diff':>10}{'mean diff':>11}{'UNet/peak':>11}")
    for row in rows:
        share = row["unet_fraction_of_matmul_peak"]
        print(
            f"{row['name']:46}{row['seconds']:9.2f}{row['seconds_per_step']:8.2f}{row['speedup_vs_fp32']:8.2f}x"
            f"{row['max_pixel_diff_vs_fp32']:10d}{row['mean_pixel_diff_vs_fp32']:11.2f}"
            f"{f'{share:.0%}' if share is not None else '-':>11}"
        )
    print()
    for short, ratio in overhead.items():
        print(f"engine overhead, {short}: SD Studio / diffusers = {ratio:.3f}x")
    for dtype in pipes:
        gflop, gflops = flops[dtype] / 1e9, peak[dtype] / 1e9
        print(f"{dtype}: UNet {gflop:.0f} GFLOP per evaluation; matmul peak {gflops:.0f} GFLOP/s")
    for dtype, entry in vae.items():
        print(
            f"VAE decode alone, {dtype}: {entry['seconds']:.2f} s, max/mean diff vs fp32 "
            f"{entry['max_pixel_diff_vs_fp32']}/{entry['mean_pixel_diff_vs_fp32']:.2f}"
        )
    print(f"live preview: {preview * 1000:.2f} ms per step = {preview / step_seconds:.3%} of a step")
    if compile_seconds is not None:
        print(f"torch.compile: the UNet compiled in {compile_seconds:.1f} s (once per model and size)")

    RESULTS.mkdir(exist_ok=True)
    stem = f"speed_{args.model}_{args.size}" + ("_cuda" if args.device == "cuda" else "")
    result = {
        "workload": header,
        "dtype_auto": auto,
        "cpu_bf16_flags": cpu_bf16_flags(),
        "rows": rows,
        "engine_overhead": overhead,
        "unet_gflop_per_eval": {d: f / 1e9 for d, f in flops.items()},
        "matmul_peak_gflops": {d: p / 1e9 for d, p in peak.items()},
        "vae_decode": vae,
        "preview_seconds_per_step": preview,
        "preview_fraction_of_step": preview / step_seconds,
        "compile_seconds": compile_seconds,
        "memory": None,
        "times": times,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    title = f"speed vs diffusers fp32: {args.size}x{args.size}, {args.steps} steps, {where.split(',')[0]}"
    chart(rows, title, RESULTS / f"{stem}.png")
    for path in saved.glob("**/*.png"):
        path.unlink()

    if not args.no_memory:
        del images, variants, engine, layout, layout_engine
        if args.device == "cuda":
            torch.cuda.empty_cache()
        mem = memory(pipes[default], args)
        print_memory(mem, default)
        result["memory"] = mem
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS / stem}.json and .png")


if __name__ == "__main__":
    main()
