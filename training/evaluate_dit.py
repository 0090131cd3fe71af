"""Measure what the demo DiT draws, through the app's own engine (``backend.generation.engine.Engine``).

The exported folder (``models/demo_dit``, written at every checkpoint) is put into the engine's registry in code as a
``flux``-family model, so this works before it is listed in ``presets/models.json``. Two figures over held-out prompts,
with the UNet demo's classifiers (``training/data.py``):

* plain prompts "a red circle on a blue background" (``evaluate.eval_prompts``): shape colour, background, shape kind;
* position prompts "a red circle on the left on a blue background", the five positions in turn over other colour
  triples: the shape's centre in the named third (``evaluate.on_side``).

Usage (from the repository root)::

    python training/evaluate_dit.py                          # 128 + 128 prompts, Euler, 20 steps
    python training/evaluate_dit.py --prompts 32 --model training/checkpoints/dit_quick/demo_dit
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from evaluate import eval_prompts, on_side  # noqa: E402

NAME = "Demo shapes DiT (offline)"
STEPS = 20
TRUE_CFG = 1.0  # FLUX's real CFG off: the distilled guidance does the work, as FLUX.1 dev runs by default
DISTILLED = 3.5  # the app's default Distilled CFG


def engine_for(path: str):
    """An Engine whose registry also holds the folder at ``path`` as ``NAME`` (family flux, the demo's 4-channel
    latent preview colours)."""
    from backend.generation.engine import Engine
    from backend.models.registry import Defaults, ModelRegistry, ModelSpec
    from backend.settings import Settings

    settings = Settings(offline=True, output_dir=Path(tempfile.mkdtemp(prefix="dit-eval-")))
    registry = ModelRegistry.load(settings.models_file)
    demo = next(spec for spec in registry.models.values() if spec.source == "models/demo")
    registry.models[NAME] = ModelSpec(
        name=NAME,
        source=str(Path(path).resolve()),
        family="flux",
        defaults=Defaults(64, 64, STEPS, TRUE_CFG),
        latent_rgb_factors=demo.latent_rgb_factors,
    )
    return Engine(settings, registry=registry)


def draw(engine, prompt: str, seed: int, **fields) -> np.ndarray:
    from backend.schema.requests import Txt2ImgRequest

    base = dict(
        steps=STEPS, guidance_scale=TRUE_CFG, distilled_cfg_scale=DISTILLED, width=data.RESOLUTION,
        height=data.RESOLUTION, sampler="Euler", schedule="Automatic", model=NAME,
    )
    request = Txt2ImgRequest(**{**base, **fields, "prompt": prompt, "seed": seed})
    return np.asarray(engine.run(request).images[0].convert("RGB"))


def evaluate(path: str, n: int = 128, seed: int = 0, **fields) -> dict:
    engine = engine_for(path)
    t0 = time.time()
    right = {"colour": 0, "background": 0, "shape": 0, "all": 0}
    for i, (c, s, b) in enumerate(eval_prompts(n, seed)):
        got = data.classify_picture(draw(engine, data.plain_caption(c, s, b), seed * 10007 + i, **fields))
        ok = got["colour"] == c, got["background"] == b, got["shape"] == s
        for key, hit in zip(("colour", "background", "shape"), ok, strict=True):
            right[key] += hit
        right["all"] += all(ok)
    sides = {side: [0, 0] for side in data.POSITIONS}
    for i, (c, s, b) in enumerate(eval_prompts(n, seed + 1)):
        side = data.POSITIONS[i % len(data.POSITIONS)]
        prompt = f"a {c} {s} {data.POSITION_PHRASE[side]} on a {b} background"
        got = data.classify_picture(draw(engine, prompt, seed * 10007 + i, **fields))
        sides[side][0] += got["colour"] is not None and on_side(side, got["cx"], got["cy"])
        sides[side][1] += 1
    return {
        "prompts": n,
        "steps": STEPS,
        "sampler": "Euler",
        "true_cfg": fields.get("guidance_scale", TRUE_CFG),
        "distilled_cfg": fields.get("distilled_cfg_scale", DISTILLED),
        "shape_colour_right": right["colour"] / n,
        "background_colour_right": right["background"] / n,
        "shape_kind_right": right["shape"] / n,
        "all_three_right": right["all"] / n,
        "named_side": sum(h for h, _ in sides.values()) / n,
        "named_side_by_position": {k: h / max(1, t) for k, (h, t) in sides.items()},
        "seconds": time.time() - t0,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_figures(f: dict) -> None:
    print(
        f"{f['prompts']} prompts (true CFG {f['true_cfg']}, distilled {f['distilled_cfg']}): colour "
        f"{f['shape_colour_right']:.1%}, background {f['background_colour_right']:.1%}, shape "
        f"{f['shape_kind_right']:.1%}, all three {f['all_three_right']:.1%}; named side {f['named_side']:.1%} "
        + ", ".join(f"{k} {v:.0%}" for k, v in f["named_side_by_position"].items())
        + f" ({f['seconds']:.0f} s)"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "demo_dit"))
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--true-cfg", type=float, default=TRUE_CFG, help="the request's CFG scale (FLUX's true CFG)")
    p.add_argument("--distilled", type=float, default=DISTILLED, help="the request's Distilled CFG")
    p.add_argument("--save", action="store_true", help="write the figures to <model>/evaluation.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (two on a busy 2-core machine crawl)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = evaluate(args.model, args.prompts, args.seed, guidance_scale=args.true_cfg,
                       distilled_cfg_scale=args.distilled)
    print_figures(figures)
    if args.save:
        (Path(args.model) / "evaluation.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
