"""Measure what the demo model draws: txt2img over >= 50 prompts, classified by image statistics.

Runs on whatever ``models/demo`` currently holds (also mid-training: the training script exports
there at every checkpoint)::

    python training/evaluate.py                       # 64 prompts, DPM++ 2M, the app's steps and guidance
    python training/evaluate.py --prompts 96 --scheduler euler --card

Each prompt is the plain form "a red circle on a blue background" over a deterministic, balanced
choice of (shape colour, shape, background colour). A picture is classified with
``training/data.py``'s ``classify_picture`` (nearest palette colour of the border = background,
most common other palette colour = shape colour, best template IoU = shape kind). ``--card`` stores
the figures in ``models/demo/evaluation.json`` and rewrites the model card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def demo_defaults():
    """The app's defaults for the demo model, read as the app reads them (``presets/models.json`` through the model
    registry): every measure runs at them, so the card's figures are what a user gets without touching a slider."""
    from backend.models.registry import ModelRegistry

    registry = ModelRegistry.load(ROOT / "presets" / "models.json")
    return next(spec.defaults for spec in registry.models.values() if spec.source == "models/demo")


_DEMO = demo_defaults()
GUIDANCE, STEPS = _DEMO.guidance_scale, _DEMO.steps

SCHEDULERS = {
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
}


def eval_prompts(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n balanced (colour, shape, background) triples: every colour and shape equally often."""
    rng = np.random.default_rng((seed, 12345))
    triples = []
    colours = list(data.COLOURS)
    for i in range(n):
        colour = colours[i % len(colours)]
        shape = data.SHAPES[(i // len(colours)) % len(data.SHAPES)]
        others = [c for c in colours if c != colour]
        triples.append((colour, shape, others[rng.integers(len(others))]))
    return triples


def load_pipeline(path: str, scheduler: str = "dpm++", device: str = "cpu", schedule: str = "Automatic"):
    """``scheduler``: a short name from SCHEDULERS, or any sampler name of the app (``DPM++ 2M SDE``) with one of its
    ``schedule`` types (``Karras``)."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    from backend.generation.samplers import build_scheduler
    from backend.schema.samplers import SAMPLERS

    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True)
    if scheduler in SAMPLERS:
        pipe.scheduler = build_scheduler(dict(pipe.scheduler.config), scheduler, schedule)
    else:
        pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def evaluate_txt2img(
    path: str,
    n_prompts: int = 64,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    scheduler: str = "dpm++",
    seed: int = 0,
    device: str = "cpu",
    batch: int = 32,
    save_grid: str | None = None,
) -> dict:
    pipe = load_pipeline(path, scheduler, device)
    triples = eval_prompts(n_prompts, seed)
    images = []
    t0 = time.time()
    for start in range(0, len(triples), batch):
        chunk = triples[start : start + batch]
        prompts = [data.plain_caption(c, s, b) for c, s, b in chunk]
        gens = [torch.Generator().manual_seed(seed * 10007 + start + i) for i in range(len(chunk))]
        out = pipe(
            prompts,
            height=data.RESOLUTION,
            width=data.RESOLUTION,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="np",
        )
        images += [(im * 255).round().astype(np.uint8) for im in out.images]
    elapsed = time.time() - t0
    right = {"colour": 0, "background": 0, "shape": 0, "all": 0}
    per_shape = {s: [0, 0] for s in data.SHAPES}
    for (c, s, b), im in zip(triples, images, strict=True):
        got = data.classify_picture(im)
        ok_c, ok_b, ok_s = got["colour"] == c, got["background"] == b, got["shape"] == s
        right["colour"] += ok_c
        right["background"] += ok_b
        right["shape"] += ok_s
        right["all"] += ok_c and ok_b and ok_s
        per_shape[s][0] += ok_s
        per_shape[s][1] += 1
    n = len(triples)
    figures = {
        "prompts": n,
        "steps": steps,
        "guidance_scale": guidance,
        "scheduler": scheduler,
        "shape_colour_right": right["colour"] / n,
        "background_colour_right": right["background"] / n,
        "shape_kind_right": right["shape"] / n,
        "all_three_right": right["all"] / n,
        "shape_kind_right_by_shape": {s: a / max(1, t) for s, (a, t) in per_shape.items()},
        "seconds_per_image": elapsed / n,
    }
    if save_grid:
        from PIL import Image

        cols = 8
        rows = (n + cols - 1) // cols
        r = data.RESOLUTION
        grid = np.zeros((rows * r, cols * r, 3), np.uint8)
        for i, im in enumerate(images):
            grid[(i // cols) * r : (i // cols + 1) * r, (i % cols) * r : (i % cols + 1) * r] = im
        Image.fromarray(grid).save(save_grid)
    return figures


# ---------------------------------------------------------------------------------------------
# img2img, inpainting (both strategies) and ControlNet canny


def _scenes(n: int, seed: int):
    """n deterministic test scenes (plain captions) and a second, different colour pair for each."""
    rng = np.random.default_rng((seed, 777))
    out = []
    for _i in range(n):
        scene = data.sample_scene(rng, p_size_word=0.0, p_position_word=0.0)
        new_colour = [c for c in data.COLOURS if c not in (scene.colour, scene.background)][rng.integers(6)]
        new_bg = [c for c in data.COLOURS if c not in (new_colour, scene.background)][rng.integers(6)]
        out.append((scene, new_colour, new_bg))
    return out


def _run(pipe, prompts, seed, **kwargs):
    gens = [torch.Generator().manual_seed(seed * 10007 + i) for i in range(len(prompts))]
    out = pipe(
        prompts,
        num_inference_steps=kwargs.pop("steps", STEPS),
        guidance_scale=kwargs.pop("guidance", GUIDANCE),
        generator=gens,
        output_type="np",
        **kwargs,
    )
    return [(im * 255).round().astype(np.uint8) for im in out.images]


def evaluate_img2img(path: str, n: int = 24, seed: int = 0, device: str = "cpu") -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    base = load_pipeline(path, "dpm++", device)
    pipe = StableDiffusionImg2ImgPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    cases = _scenes(n, seed)
    inputs = [Image.fromarray(data.render(s)) for s, _, _ in cases]
    same = [s.caption for s, _, _ in cases]
    new = [data.plain_caption(c, s.shape, b) for s, c, b in cases]
    low = _run(pipe, new, seed, image=inputs, strength=0.2)
    high = _run(pipe, new, seed, image=inputs, strength=0.9)
    keep = follow = 0
    psnrs = []
    for (s, c, b), im_in, lo, hi in zip(cases, inputs, low, high, strict=True):
        a = np.asarray(im_in).astype(np.float32) / 255
        mse = float(((lo.astype(np.float32) / 255 - a) ** 2).mean())
        psnrs.append(10 * np.log10(1 / max(mse, 1e-10)))
        got_lo = data.classify_picture(lo)
        keep += got_lo["colour"] == s.colour and got_lo["background"] == s.background
        got_hi = data.classify_picture(hi)
        follow += got_hi["colour"] == c and got_hi["background"] == b
    del same
    return {
        "cases": n,
        "strength_0.2_keeps_input_colours": keep / n,
        "strength_0.2_psnr_db": float(np.mean(psnrs)),
        "strength_0.9_follows_new_prompt_colours": follow / n,
    }


def _box_mask(scene, pad: int = 4) -> np.ndarray:
    m = np.zeros((data.RESOLUTION, data.RESOLUTION), np.uint8)
    h = scene.size / 2 + pad
    x0, x1 = int(max(0, scene.cx - h)), int(min(data.RESOLUTION, scene.cx + h))
    y0, y1 = int(max(0, scene.cy - h)), int(min(data.RESOLUTION, scene.cy + h))
    m[y0:y1, x0:x1] = 255
    return m


def evaluate_inpaint(path: str, n: int = 24, seed: int = 0, device: str = "cpu") -> dict:
    """Repaint the shape's box with a new shape colour, with the 9-channel UNet and with the base UNet."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from PIL import Image

    base = load_pipeline(path, "dpm++", device)
    strategies = {"4-channel (latent blending)": StableDiffusionInpaintPipeline(**base.components)}
    if (Path(path) / "unet_inpaint").is_dir():
        unet9 = UNet2DConditionModel.from_pretrained(
            path, subfolder="unet_inpaint", local_files_only=True, use_safetensors=True
        ).to(device)
        strategies["9-channel inpainting UNet"] = StableDiffusionInpaintPipeline(**{**base.components, "unet": unet9})
    cases = _scenes(n, seed)
    inputs = [Image.fromarray(data.render(s)) for s, _, _ in cases]
    masks = [_box_mask(s) for s, _, _ in cases]
    prompts = [data.plain_caption(c, s.shape, s.background) for s, c, _ in cases]
    figures = {"cases": n}
    for name, pipe in strategies.items():
        pipe.set_progress_bar_config(disable=True)
        outs = _run(
            pipe,
            prompts,
            seed,
            image=inputs,
            mask_image=[Image.fromarray(m) for m in masks],
            height=data.RESOLUTION,
            width=data.RESOLUTION,
            strength=1.0,
        )
        took = 0
        kept = []
        for (s, c, _), im_in, m, out in zip(cases, inputs, masks, outs, strict=True):
            inside = m > 127
            labels = data._palette_labels(out)
            counts = np.bincount(labels[inside], minlength=len(data.COLOURS))
            counts[data.COLOURS.index(s.background)] = 0
            took += data.COLOURS[int(counts.argmax())] == c and counts.max() > 0.1 * inside.sum()
            outside = ~inside
            if outside.sum():
                kept.append(float((labels[outside] == data._palette_labels(np.asarray(im_in))[outside]).mean()))
        figures[name] = {"mask_takes_prompt_colour": took / n, "outside_pixels_kept": float(np.mean(kept))}
    return figures


def _edge_iou(a: np.ndarray, b: np.ndarray, tolerance: int = 1) -> float:
    """IoU of two edge maps, each dilated by ``tolerance`` pixels."""
    import cv2

    k = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    a, b = cv2.dilate((a > 0).astype(np.uint8), k) > 0, cv2.dilate((b > 0).astype(np.uint8), k) > 0
    return float((a & b).sum() / max(1, (a | b).sum()))


def evaluate_controlnet(path: str, n: int = 24, seed: int = 0, device: str = "cpu") -> dict:
    """Edge IoU between the control canny map and the output's canny map, with and without ControlNet."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    if not (Path(path) / "controlnet_canny").is_dir():
        return {"skipped": "no controlnet_canny folder"}
    base = load_pipeline(path, "dpm++", device)
    cn = ControlNetModel.from_pretrained(
        path, subfolder="controlnet_canny", local_files_only=True, use_safetensors=True
    ).to(device)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=cn)
    pipe.set_progress_bar_config(disable=True)
    cases = _scenes(n, seed)
    edges = [data.canny(data.render(s)) for s, _, _ in cases]
    controls = [Image.fromarray(np.stack([e] * 3, -1)) for e in edges]
    prompts = [s.caption for s, _, _ in cases]
    with_cn = _run(pipe, prompts, seed, image=controls, height=data.RESOLUTION, width=data.RESOLUTION)
    without = _run(base, prompts, seed, height=data.RESOLUTION, width=data.RESOLUTION)
    iou_with = [_edge_iou(data.canny(o), e) for o, e in zip(with_cn, edges, strict=True)]
    iou_without = [_edge_iou(data.canny(o), e) for o, e in zip(without, edges, strict=True)]
    return {
        "cases": n,
        "edge_iou_with_controlnet": float(np.mean(iou_with)),
        "edge_iou_without_controlnet": float(np.mean(iou_without)),
    }


# ---------------------------------------------------------------------------------------------
# Size and position words: does the picture follow them?

SIDES = data.POSITIONS  # left, right, top, bottom, center


def on_side(side: str, cx: float, cy: float) -> bool:
    """The shape's centre lies in the named third of the picture; for the centre, within a tenth of the picture's side
    of its middle both ways (the middle third would hold most unpositioned shapes too: 88% of them)."""
    third, middle, near = data.RESOLUTION / 3, data.RESOLUTION / 2, data.RESOLUTION / 10
    return {
        "left": cx < third,
        "right": cx > 2 * third,
        "top": cy < third,
        "bottom": cy > 2 * third,
        "center": abs(cx - middle) <= near and abs(cy - middle) <= near,
    }[side]


def evaluate_words(path: str, n: int = 16, seed: int = 0, device: str = "cpu", guidance: float = GUIDANCE) -> dict:
    """Position and size words against the same prompts and seeds without them.

    Positions: for each side and the centre, ``n`` prompts "a red circle on the left on a blue background"; a picture
    counts when the shape's centre is in the named third (the centre: see ``on_side``). The same prompts
    without the position word (same seeds) give the chance level. Sizes: the mean bounding-box side with "small" and
    with "large" (training sizes 20-28 and 38-46 px).
    """
    pipe = load_pipeline(path, "dpm++", device)
    triples = eval_prompts(n, seed + 1)  # other colour triples than the main figures
    plain = [data.plain_caption(c, s, b) for c, s, b in triples]
    base = [data.classify_picture(im) for im in _run(pipe, plain, seed, guidance=guidance)]
    positions = {}
    for side in SIDES:
        phrase = data.POSITION_PHRASE[side]
        prompts = [f"a {c} {s} {phrase} on a {b} background" for c, s, b in triples]
        got = [data.classify_picture(im) for im in _run(pipe, prompts, seed, guidance=guidance)]
        positions[side] = {
            "with_word": sum(g["colour"] is not None and on_side(side, g["cx"], g["cy"]) for g in got) / n,
            "without_word": sum(g["colour"] is not None and on_side(side, g["cx"], g["cy"]) for g in base) / n,
        }
    sizes = {}
    for word in data.SIZES:
        prompts = [f"a {word} {c} {s} on a {b} background" for c, s, b in triples]
        got = [data.classify_picture(im) for im in _run(pipe, prompts, seed, guidance=guidance)]
        sizes[word] = float(np.mean([g["size"] for g in got if g["colour"] is not None]))
    sizes["no size word"] = float(np.mean([g["size"] for g in base if g["colour"] is not None]))
    negatives = evaluate_negatives(pipe, triples, seed, guidance)
    return {
        "prompts_per_word": n,
        "guidance_scale": guidance,
        "positions": positions,
        "sizes_px": sizes,
        "negatives": negatives,
        "measured": now(),
    }


def evaluate_negatives(pipe, triples, seed: int, guidance: float = GUIDANCE) -> dict:
    """Does a negative prompt steer away from the colour it names? For prompts silent on colour ("a circle on a
    blue background"), the colour the model drew without a negative prompt is then named as the negative prompt,
    same seed, as a bare word ("red") and as a caption ("a red circle"): the share of pictures that kept it."""
    prompts = [f"a {s} on a {b} background" for _, s, b in triples]
    drawn = [
        g["colour"] for g in (data.classify_picture(im) for im in _run(pipe, prompts, seed + 7, guidance=guidance))
    ]
    cases = [(p, c, s) for p, c, (_, s, _) in zip(prompts, drawn, triples, strict=True) if c is not None]
    forms = {"bare word": [c for _, c, _ in cases], "caption": [f"a {c} {s}" for _, c, s in cases]}
    kept = {}
    for name, negatives in forms.items():
        got = _run(pipe, [p for p, _, _ in cases], seed + 7, negative_prompt=negatives, guidance=guidance)
        colours = [data.classify_picture(im)["colour"] for im in got]
        kept[name] = float(np.mean([got_c == c for got_c, (_, c, _) in zip(colours, cases, strict=True)]))
    return {"prompts": len(cases), "kept_the_colour": kept}


# The app's samplers measured for specks: DPM++ 2M (the evaluation's usual one) and the app's default (DPM++ 2M
# Karras) first, then the ones whose last steps leave other latents (ancestral, SDE, multistep predictor-corrector).
SPECK_SAMPLERS = (
    ("DPM++ 2M", "Automatic"),
    ("DPM++ 2M", "Karras"),
    ("Euler a", "Automatic"),
    ("Euler", "Automatic"),
    ("UniPC", "Automatic"),
    ("DDIM", "Automatic"),
    ("DPM++ 2M SDE", "Karras"),
)
# Specks are measured again at this guidance: the sd15 family's usual range, where this model's pictures overshoot.
HIGH_GUIDANCE = 6.0


def evaluate_specks(
    path: str, n: int = 64, seed: int = 0, device: str = "cpu", guidance: float = GUIDANCE, high: float = HIGH_GUIDANCE
) -> dict:
    """Off-palette specks (``data.specks``) in VAE round trips of clean pictures, and in generated pictures: the
    same prompts and seeds through every sampler of SPECK_SAMPLERS, at ``guidance`` and again at ``high``."""
    from diffusers import AutoencoderKL

    from backend.generation.samplers import build_scheduler

    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True).float().to(device)
    samples = [data.sample(seed + 4242, i) for i in range(n)]
    pictures = np.stack([pic for pic, _, _ in samples])
    with torch.no_grad():
        decoded = vae.decode(vae.encode(data.to_tensor(pictures).to(device)).latent_dist.mean).sample
    trips = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    mse = float(((trips.astype(np.float64) - pictures) ** 2).mean())
    scenes = [scene for _, _, scene in samples]
    triples = eval_prompts(n, seed)
    captions = [data.plain_caption(c, s, b) for c, s, b in triples]
    pipe = load_pipeline(path, "dpm++", device)
    config = dict(pipe.scheduler.config)

    def rate(pictures, pairs, measure=data.specks) -> float:
        return float(np.mean([measure(pic, c, b) > 0 for pic, (c, b) in zip(pictures, pairs, strict=True)]))

    def generated(sampler: str, schedule: str, scale: float) -> dict:
        """A speck in a generated picture is a blob of a third colour (``data.drawn_specks``); whether the picture
        has the caption's colours is the separate prompt-following figure beside it."""
        pipe.scheduler = build_scheduler(config, sampler, schedule)
        got = _run(pipe, captions, seed, guidance=scale)
        drawn = [data.classify_picture(im) for im in got]
        right = [d["colour"] == c and d["background"] == b for d, (c, _, b) in zip(drawn, triples, strict=True)]
        return {
            "with_speck": rate(got, [(c, b) for c, _, b in triples], data.drawn_specks),
            "caption_colours": float(np.mean(right)),
        }

    def by_sampler(scale: float) -> dict:
        return {
            (sampler if schedule == "Automatic" else f"{sampler} {schedule}"): generated(sampler, schedule, scale)
            for sampler, schedule in SPECK_SAMPLERS
        }

    pairs = [(sc.colour, sc.background) for sc in scenes]
    return {
        "pictures": n,
        "clean_with_speck": rate(pictures, pairs),
        "round_trip_with_speck": rate(trips, pairs),
        "round_trip_psnr_db": 10 * float(np.log10(255**2 / max(mse, 1e-9))),
        "steps": STEPS,
        "guidance_scale": guidance,
        "generated_by_sampler": by_sampler(guidance),
        "high_guidance": {"guidance_scale": high, "generated_by_sampler": by_sampler(high)},
        "measured": now(),
    }


def print_words(f: dict) -> None:
    print(f"position words ({f['prompts_per_word']} prompts each): shape centre in the named third")
    for side, v in f["positions"].items():
        print(f"  {side:7} with the word {v['with_word']:6.1%}, same prompts and seeds without {v['without_word']:.1%}")
    print("size words: mean bounding-box side " + ", ".join(f"{k} {v:.1f} px" for k, v in f["sizes_px"].items()))
    kept = f["negatives"]["kept_the_colour"]
    print("negative prompt = the colour drawn without it; kept: " + ", ".join(f"{k} {v:.0%}" for k, v in kept.items()))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def save_figures(model_dir, figures: dict, stamp: bool = True):
    """Merge ``figures`` into evaluation.json; ``stamp``: they are the main figures (their date is the card's)."""
    path = Path(model_dir) / "evaluation.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(figures)
    if not stamp:
        path.write_text(json.dumps(old, indent=2))
        return
    old["measured"] = now()
    info = Path(model_dir) / "training.json"
    if info.exists():  # which weights were measured (models/demo is re-exported during training)
        old["measured_unet_steps"] = json.loads(info.read_text()).get("unet_steps")
    path.write_text(json.dumps(old, indent=2))


def print_figures(f: dict):
    print(f"txt2img over {f['prompts']} prompts, {f['steps']} steps, {f['scheduler']}, guidance {f['guidance_scale']}:")
    print(f"  shape colour right     {f['shape_colour_right']:6.1%}   (target >= 90%)")
    print(f"  background colour right {f['background_colour_right']:6.1%}  (target >= 90%)")
    print(f"  shape kind right       {f['shape_kind_right']:6.1%}   (target >= 70%)")
    print(f"  all three right        {f['all_three_right']:6.1%}")
    print("  shape kind by shape:   " + ", ".join(f"{s} {v:.0%}" for s, v in f["shape_kind_right_by_shape"].items()))
    print(f"  {f['seconds_per_image']:.3f} s per image")


# Sensible step counts where 20 is not: LCM is a few-step sampler (this model was not LCM-distilled), and the
# linear multistep samplers (LMS, PLMS) need more steps on this small model (measured: 29-50% at 10-20, 83-96% at 40).
SAMPLER_STEPS = {"LCM": 4, "LMS": 40, "PLMS": 40}


def evaluate_samplers(args) -> dict[str, dict]:
    """Shape- and background-colour accuracy of every sampler in the app's registry, printed as a table."""
    from backend.schema.samplers import SAMPLERS

    table = {}
    print(f"{'sampler':14} steps  shape colour  background  shape kind")
    for name in SAMPLERS:
        steps = SAMPLER_STEPS.get(name, args.steps)
        f = evaluate_txt2img(args.model, args.prompts, steps, args.guidance, name, args.seed, args.device)
        keys = ("steps", "shape_colour_right", "background_colour_right", "shape_kind_right")
        table[name] = {key: f[key] for key in keys}
        print(
            f"{name:14} {steps:5}  {f['shape_colour_right']:11.0%}  {f['background_colour_right']:10.0%}"
            f"  {f['shape_kind_right']:10.0%}"
        )
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "demo"))
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--steps", type=int, default=STEPS, help="default: the app's for the demo model")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help="default: the app's for the demo model")
    p.add_argument("--scheduler", default="dpm++", choices=list(SCHEDULERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", default=None, help="save the generated pictures as one PNG grid")
    p.add_argument("--all", action="store_true", help="also measure img2img, inpainting and ControlNet")
    p.add_argument("--cases", type=int, default=24, help="test pictures for the --all measurements")
    p.add_argument("--card", action="store_true", help="store figures in evaluation.json and rewrite the model card")
    p.add_argument("--samplers", action="store_true", help="colour accuracy of every sampler of the app, then stop")
    p.add_argument("--words", action="store_true", help="do position and size words work? then stop")
    p.add_argument("--specks", action="store_true", help="off-palette specks in VAE round trips and pictures")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.specks:
        specks = evaluate_specks(args.model, args.prompts, args.seed, args.device, args.guidance)
        print(json.dumps(specks, indent=2))
        if args.card:
            import model_card

            save_figures(args.model, {"specks": specks}, stamp=False)
            model_card.write(Path(args.model))
        return specks
    if args.words:
        words = evaluate_words(args.model, max(4, args.prompts // 4), args.seed, args.device, args.guidance)
        print_words(words)
        if args.card:
            import model_card

            save_figures(args.model, {"words": words}, stamp=False)
            model_card.write(Path(args.model))
        return words
    if args.samplers:
        table = evaluate_samplers(args)
        if args.card:
            import model_card

            figures = {"prompts": args.prompts, "guidance": args.guidance, "measured": now(), "table": table}
            save_figures(args.model, {"samplers": figures}, stamp=False)
            model_card.write(Path(args.model))
        return table
    f = evaluate_txt2img(
        args.model, args.prompts, args.steps, args.guidance, args.scheduler, args.seed, args.device, save_grid=args.grid
    )
    print_figures(f)
    results = {"txt2img": f}
    if args.all:
        for name, fn in (
            ("img2img", evaluate_img2img),
            ("inpaint", evaluate_inpaint),
            ("controlnet", evaluate_controlnet),
        ):
            results[name] = fn(args.model, args.cases, args.seed, args.device)
            print(name + ":", json.dumps(results[name], indent=2))
    if args.card:
        import model_card

        save_figures(args.model, results)
        model_card.write(Path(args.model))
    return f


if __name__ == "__main__":
    main()
