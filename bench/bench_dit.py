"""Benchmark: SD Studio's engine against a plain diffusers ``FluxPipeline`` call on a FLUX-shaped model, and the DiT
block cache (``dit_cache``, First Block Cache): its speed-up and its pixel difference.

    python -m bench.bench_dit [--size 256] [--steps 4] [--rounds 5] [--threshold 0.1]
    python -m bench                                # the SD 1.5 benchmark, then this one

The model is FLUX.1's structure with random weights (the cost of a step does not depend on their values, and
nothing is downloaded), bigger than the test model so a step costs something on a CPU: a transformer of
``--double`` double-stream and ``--single`` single-stream blocks at width ``--heads`` × 64 (FLUX.1 has 19 and 38 at
3072), with the tiny test model's text encoders and VAE (``backend.models.tiny_dit``). In one run, in alternating
rounds (load drift hits every variant alike), medians of:

1. a bare ``FluxPipeline`` call (distilled guidance 3.5, the same seed, steps and size);
2. the same through ``Engine.run`` (validation, a fresh scheduler, the step callback with a preview every step,
   saving the PNG): the engine's overhead is the ratio of the two;
3. the engine with the block cache at ``--threshold``: its speed-up over (2), the full steps it ran, and the max and
   mean pixel difference (0-255) against (2)'s picture.

The ratios are of CPU seconds of this process (one torch thread by default), printed with the wall seconds: on a
shared machine the wall clock measures the neighbours too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import FluxPipeline, FluxTransformer2DModel  # noqa: E402
from PIL import Image  # noqa: E402

from backend import Engine, Settings, Txt2ImgRequest  # noqa: E402
from backend.generation.pipeline_call import generators  # noqa: E402
from backend.generation.samplers import build_scheduler  # noqa: E402
from backend.models.pipelines import PipelineCache  # noqa: E402
from backend.models.registry import ModelRegistry  # noqa: E402
from backend.models.tiny_dit import LATENT_CHANNELS, build_flux  # noqa: E402

PROMPT = "a lighthouse on a cliff at sunset"
SEED = 1234
MODEL = "Tiny FLUX (offline test model)"  # the registry entry whose family (flux) the engine runs it as
DISTILLED = 3.5


def build(args) -> FluxPipeline:
    """FLUX.1's pipeline with a bigger random-weight transformer than the test model's."""
    pipe = build_flux()
    torch.manual_seed(0)
    pipe.transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,
        num_layers=args.double,
        num_single_layers=args.single,
        attention_head_dim=64,
        num_attention_heads=args.heads,
        joint_attention_dim=pipe.text_encoder_2.config.d_model,
        pooled_projection_dim=pipe.text_encoder.config.projection_dim or pipe.text_encoder.config.hidden_size,
        guidance_embeds=True,
        axes_dims_rope=[16, 24, 24],
    )
    for part in pipe.components.values():  # built, not loaded: modules start in training mode
        if isinstance(part, torch.nn.Module):
            part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def engine_for(pipe: FluxPipeline, output_dir: Path) -> Engine:
    """An engine that loads ``pipe`` as the FLUX model, with a live preview every step and saving on."""
    settings = Settings.from_env(offline=True, output_dir=output_dir, preview_every=1, dtype="float32", device="cpu")
    registry = ModelRegistry.load(settings.models_file)
    return Engine(settings, registry, PipelineCache(registry, settings, loader=lambda spec, s, plan: pipe))


def bare(pipe: FluxPipeline, args) -> Image.Image:
    pipe.scheduler = build_scheduler(dict(pipe.scheduler.config), "Euler", "Automatic", SEED, "flow_sigmas")
    return pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=DISTILLED, width=args.size,
                height=args.size, generator=generators(SEED, 1)).images[0]


def through_engine(engine: Engine, args, threshold: float = 0.0) -> Image.Image:
    request = Txt2ImgRequest(prompt=PROMPT, seed=SEED, steps=args.steps, guidance_scale=1.0,
                             distilled_cfg_scale=DISTILLED, width=args.size, height=args.size, sampler="Euler",
                             schedule="Automatic", model=MODEL, dit_cache=threshold)
    return engine.run(request, on_step=lambda event: None).images[0]


def difference(image: Image.Image, reference: Image.Image) -> tuple[int, float]:
    delta = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    return int(delta.max()), float(delta.mean())


def full_steps(engine: Engine, pipe: FluxPipeline, args) -> int:
    """How many steps ran the last block with the cache on (the others reused it)."""
    count = [0]
    handle = pipe.transformer.single_transformer_blocks[-1].proj_mlp.register_forward_hook(
        lambda *_: count.__setitem__(0, count[0] + 1)
    )
    through_engine(engine, args, args.threshold)
    handle.remove()
    return count[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.1, help="the dit_cache threshold measured")
    parser.add_argument("--double", type=int, default=2, help="double-stream blocks")
    parser.add_argument("--single", type=int, default=4, help="single-stream blocks")
    parser.add_argument("--heads", type=int, default=6, help="attention heads of 64 (width = heads × 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is the work done)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipe = build(args)
    engine = engine_for(pipe, Path(tempfile.mkdtemp(prefix="sdstudio-bench-dit-")))
    cached = f"SD Studio + dit_cache {args.threshold:g}"
    variants = {
        "diffusers FluxPipeline": lambda: bare(pipe, args),
        "SD Studio": lambda: through_engine(engine, args),
        cached: lambda: through_engine(engine, args, args.threshold),
    }
    images = {name: run() for name, run in variants.items()}  # warm-up, and the pictures compared
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    # CPU seconds of this process: what a run costs when other processes share the cores (wall time then is not).
    median = {name: statistics.median(values) for name, values in cpu.items()}
    width = args.heads * 64
    print(f"FLUX-shaped model: {args.double}+{args.single} blocks at width {width}, {args.size}x{args.size}, "
          f"{args.steps} steps, fp32 on {torch.get_num_threads()} CPU threads, median of {args.rounds} rounds")
    base = median["diffusers FluxPipeline"]
    for name, seconds in median.items():
        wall = statistics.median(times[name])
        print(f"  {name:<28} {seconds:7.3f} CPU s ({wall:7.3f} wall s)   x{seconds / base:.3f} of diffusers")
    engine_max, engine_mean = difference(images["SD Studio"], images["diffusers FluxPipeline"])
    print(f"  engine overhead: {median['SD Studio'] / base - 1:+.1%} (picture vs diffusers: max {engine_max}, "
          f"mean {engine_mean:.2f})")
    cache_max, cache_mean = difference(images[cached], images["SD Studio"])
    print(f"  dit_cache {args.threshold:g}: {median['SD Studio'] / median[cached]:.2f}x faster, "
          f"{full_steps(engine, pipe, args)}/{args.steps} full steps, pixels vs no cache: max {cache_max}, "
          f"mean {cache_mean:.2f}")


if __name__ == "__main__":
    main()
