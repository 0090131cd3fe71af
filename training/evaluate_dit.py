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
    python training/evaluate_dit.py --more --save            # every other measure (training/evaluate_dit_more.py)
    python training/evaluate_dit.py --words --cases 16       # one of them: --words --negatives --img2img --inpaint
                                                             # --specks --distilled-sweep

``--save`` merges the figures into ``<model>/evaluation.json`` (the main ones at its top level, each other measure
under its own key), so the measures can run one at a time.
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
import evaluate_dit_more as more  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from evaluate import eval_prompts, on_side  # noqa: E402

NAME = "Demo shapes DiT (offline)"
STEPS = 20
TRUE_CFG = 1.0  # FLUX's real CFG off: the distilled guidance does the work, as FLUX.1 dev runs by default
DISTILLED = 3.5  # the app's default Distilled CFG


def engine_for(path: str, dtype: str = "auto"):
    """An Engine whose registry also holds the folder at ``path`` as ``NAME`` (family flux, the demo's 4-channel
    latent preview colours); ``dtype``: the app's ``--dtype`` (auto: what the app picks on this machine)."""
    from backend.generation.engine import Engine
    from backend.models.registry import Defaults, ModelRegistry, ModelSpec
    from backend.settings import Settings

    settings = Settings(offline=True, output_dir=Path(tempfile.mkdtemp(prefix="dit-eval-")), dtype=dtype)
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

    return more.picture(engine, {**base_fields(), **fields}, Txt2ImgRequest, prompt, seed)


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
        "dtype": str(engine.cache.plan.dtype).removeprefix("torch."),
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


# flag -> (key in evaluation.json, measure, its default count of prompts or cases)
MEASURES = {
    "words": ("words", more.measure_words, 32),
    "negatives": ("negatives", more.measure_negatives, 48),
    "img2img": ("img2img", more.measure_img2img, 24),
    "inpaint": ("inpaint", more.measure_inpaint, 32),
    "specks": ("specks", more.measure_specks, 128),
    "distilled_sweep": ("distilled", more.measure_distilled, 64),
}


def base_fields() -> dict:
    """The request fields every measure runs at: the app's defaults for this model."""
    return dict(
        steps=STEPS, guidance_scale=TRUE_CFG, distilled_cfg_scale=DISTILLED, width=data.RESOLUTION,
        height=data.RESOLUTION, sampler="Euler", schedule="Automatic", model=NAME,
    )


def save(model: str, figures: dict) -> None:
    """Merge ``figures`` into ``<model>/evaluation.json``."""
    path = Path(model) / "evaluation.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **figures}, indent=2) + "\n")


def run_measures(args) -> dict:
    chosen = [flag for flag in MEASURES if args.more or getattr(args, flag)]
    engine = engine_for(args.model, args.dtype)
    out = {}
    for flag in chosen:
        key, measure, default = MEASURES[flag]
        key = key if args.dtype == "auto" else f"{key}_{args.dtype}"  # beside the figures at the app's precision
        t0 = time.time()
        figures = measure(engine, base_fields(), args.cases or default, args.seed)
        figures["seconds"] = time.time() - t0
        figures["dtype"] = str(engine.cache.plan.dtype).removeprefix("torch.")  # the app's choice on this machine
        command = f"python training/evaluate_dit.py --{flag.replace('_', '-')}"
        figures["command"] = command + (f" --cases {args.cases}" if args.cases else "") + (
            f" --dtype {args.dtype}" if args.dtype != "auto" else ""
        )
        print(f"[{key}]", json.dumps(figures, indent=2))
        out[key] = figures
        if args.save:  # after each measure: a long run keeps what it measured so far
            save(args.model, {key: figures})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "demo_dit"))
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--true-cfg", type=float, default=TRUE_CFG, help="the request's CFG scale (FLUX's true CFG)")
    p.add_argument("--distilled", type=float, default=DISTILLED, help="the request's Distilled CFG")
    p.add_argument("--save", action="store_true", help="merge the figures into <model>/evaluation.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (two on a busy 2-core machine crawl)")
    for flag in MEASURES:
        p.add_argument("--" + flag.replace("_", "-"), action="store_true", help=MEASURES[flag][1].__doc__.split(".")[0])
    p.add_argument("--more", action="store_true", help="every measure above, one after another")
    p.add_argument("--cases", type=int, default=0, help="prompts or cases per measure (0: each measure's default)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="the app's --dtype for the measures (not auto: saved under <measure>_<dtype>)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.more or any(getattr(args, flag) for flag in MEASURES):
        return run_measures(args)
    figures = evaluate(args.model, args.prompts, args.seed, guidance_scale=args.true_cfg,
                       distilled_cfg_scale=args.distilled)
    print_figures(figures)
    if args.save:
        save(args.model, figures)
    return figures


if __name__ == "__main__":
    main()
