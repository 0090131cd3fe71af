"""Benchmark: a sampler grid against the same cells run as separate txt2img generations (tiny model by default).

    python bench/bench_grid.py [--model NAME] [--samplers "Euler,Euler a,DPM++ 2M,DDIM"] [--steps 4,8]
                               [--size 64] [--cfg 7] [--repeat 3]

One run prints, side by side: the N cells as N separate ``engine.run`` calls (each encodes the prompt), the grid
with one pipeline call per cell (prompt encoded once), and the grid with cells batched by step count; each as
seconds, as a ratio to the N separate runs, and with the number of text-encoder passes it made. Offline, no
outputs written. With the tiny model on a CPU the UNet's cost grows with the batch, so batching gains little; it
gains where fixed per-call costs dominate (try ``--model "Demo shapes (offline)"``). Device and threads come from
the usual settings (``SDSTUDIO_DEVICE``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from backend.generation.engine import Engine  # noqa: E402
from backend.grid.plan import GridRequest, plan_grid  # noqa: E402
from backend.grid.prompt import encode_prompt  # noqa: E402
from backend.grid.runner import GridRunner  # noqa: E402
from backend.settings import Settings  # noqa: E402

MODEL = "Tiny (offline test model)"


class EncoderCounter:
    """Counts text-encoder forward passes (one for the prompt, one for the negative prompt per encode)."""

    def __init__(self, text_encoder: torch.nn.Module):
        self.calls = 0
        text_encoder.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1


def compare(variants: dict[str, object], repeat: int, counter: EncoderCounter) -> list[tuple[str, float, int]]:
    """Best wall time of each variant over ``repeat`` rounds (interleaved, so load drift hits all alike), and the
    encoder passes one run of it makes."""
    best = dict.fromkeys(variants, float("inf"))
    passes = dict.fromkeys(variants, 0)
    for _ in range(repeat):
        for name, fn in variants.items():
            before = counter.calls
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            passes[name] = counter.calls - before
    return [(name, best[name], passes[name]) for name in variants]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=MODEL, help="a name from presets/models.json")
    parser.add_argument("--samplers", default="Euler,Euler a,DPM++ 2M,DDIM")
    parser.add_argument("--steps", default="4,8")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    engine = Engine(Settings.from_env(offline=True, save_outputs=False, preview_every=0))
    grid = GridRequest(
        prompt="a red circle on a blue background",
        negative_prompt="blurry",
        seed=1234,
        guidance_scale=args.cfg,
        width=args.size,
        height=args.size,
        schedule="Automatic",
        model=args.model,
        samplers=args.samplers.split(","),
        steps_list=args.steps.split(","),
    )
    cells = plan_grid(grid, engine).cells
    pipe = engine.cache.pipeline(args.model, "txt2img")  # loads the model before anything is timed
    engine.run(cells[0])  # warm-up
    counter = EncoderCounter(pipe.text_encoder)

    def separate() -> None:
        for cell in cells:
            engine.run(cell)

    variants = {
        f"{len(cells)} separate txt2img runs": separate,
        "grid, one pipeline call per cell": lambda: GridRunner(engine, batch=False).run(grid),
        "grid, cells batched by step count": lambda: GridRunner(engine).run(grid),
    }
    rows = compare(variants, args.repeat, counter)
    start, encodes = time.perf_counter(), 20
    for _ in range(encodes):
        encode_prompt(pipe, grid.prompt, grid.negative_prompt, guided=args.cfg > 1)
    encode_s = (time.perf_counter() - start) / encodes

    samplers, steps = grid.samplers, grid.steps_list
    print(
        f"{args.model}, {args.size}x{args.size}, CFG {args.cfg:g}, device {pipe.device}, torch threads "
        f"{torch.get_num_threads()}; best of {args.repeat}"
    )
    print(f"grid: {len(samplers)} samplers × {len(steps)} step counts ({', '.join(steps)}) = {len(cells)} cells\n")
    print(f"{'':36}{'seconds':>9}{'/ N single runs':>18}{'encoder passes':>17}")
    baseline = rows[0][1]
    for name, seconds, passes in rows:
        print(f"{name:36}{seconds:9.2f}{seconds / baseline:18.2f}{passes:17d}")
    saved = (len(cells) - 1) * encode_s
    print(
        f"\none prompt encode (prompt + negative): {encode_s * 1000:.1f} ms; encoding once instead of per cell saves "
        f"{len(cells) - 1} × that = {saved:.2f} s ({saved / baseline:.1%} of the separate runs)"
    )


if __name__ == "__main__":
    main()
