"""Render ``models/demo_dit/README.md`` (the demo DiT's card) from the folder's ``training.json``, ``evaluation.json``
(``training/evaluate_dit.py --save``) and configs. Usage (from the repository root)::

    python training/model_card_dit.py                  # rewrites models/demo_dit/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402

ROOT = HERE.parent
# The shipped weights' run, read from training/logs/dit.jsonl, dit_full.log, dit_resume.log and the checkpoints'
# file times (logs and checkpoints are not in the repository, so the figures are kept here).
RUN = {
    "started": "2026-12-06 07:10 UTC",
    "latents_s": 434,
    "base": "07:17-09:38 UTC, 8,466 s of wall time, including a stall of about 45 min (steps 5,414-5,711 took "
    "46 min, 08:50-09:37, against about 4 min for 300 steps before it); 0.52-0.97 it/s",
    "distill": "09:38-09:51 UTC (about 1.5 it/s; interrupted after the checkpoint at step 1,089), resumed with the "
    "same command at 10:02 from step 1,089, finished at 10:03 (77 s)",
    "finished": "2026-12-06 10:04 UTC (export and the 32 + 32 prompt check)",
    "threads": "one thread, nice 15, on a 2-core machine shared with other work",
}
# What the slow LoRA test printed on these weights (`pytest -m slow -s tests/test_demo_dit_lora.py`, 2026-12-06).
LORA_TEST = "`purple` drawn magenta in 7 of 8 pictures with the LoRA, 0 of 8 without; other colours kept in 3 of 4"


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, int | float) else "n/a"


def _params(file: Path) -> tuple[float, str]:
    """Millions of parameters and the stored dtype of one safetensors file (its header only)."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as h:
        count = sum(math.prod(h.get_slice(k).get_shape()) for k in h.keys())
        dtypes = sorted({h.get_slice(k).get_dtype() for k in h.keys()})
    return count / 1e6, "/".join(dtypes)


def _part(folder: Path, sub: str) -> str:
    file = next((folder / sub).glob("*.safetensors"))
    m, dtype = _params(file)
    return f"{m:.2f}M params, {dtype}, {file.stat().st_size / 1e6:.1f} MB"


def _architecture(folder: Path) -> str:
    tr = json.loads((folder / "transformer" / "config.json").read_text())
    t5 = json.loads((folder / "text_encoder_2" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    sch = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    width = tr["num_attention_heads"] * tr["attention_head_dim"]
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    return f"""- **Transformer** `FluxTransformer2DModel` with guidance embedding ({_part(folder, "transformer")}):
  {tr["num_layers"]} double-stream + {tr["num_single_layers"]} single-stream blocks, width {width}
  ({tr["num_attention_heads"]} heads of {tr["attention_head_dim"]}), RoPE axes {tr["axes_dims_rope"]}, text width
  {tr["joint_attention_dim"]}, pooled width {tr["pooled_projection_dim"]}, `in_channels` {tr["in_channels"]} (2x2
  packed patches of the 4-channel latents).
- **Text encoder 2, T5** `T5EncoderModel` ({_part(folder, "text_encoder_2")}): {t5["num_layers"]} layers, width
  {t5["d_model"]}, {t5["num_heads"]} heads, {t5["relative_attention_num_buckets"]} relative-position buckets, T5's
  tokenizer and {t5["vocab_size"]:,}-entry vocabulary; trained from scratch jointly with the transformer.
- **Text encoder 1, CLIP** ({_part(folder, "text_encoder")}): the UNet demo's (`models/demo`), frozen; FLUX reads
  only its pooled vector.
- **VAE** ({_part(folder, "vae")}): the UNet demo's, same weights, frozen: 64x64 pictures to
  {vae["latent_channels"]}x8x8 latents (16 image tokens), `scaling_factor` {vae["scaling_factor"]:.4f},
  `shift_factor` {vae["shift_factor"]}.
- **Scheduler** `{sch["_class_name"]}`, shift {sch["shift"]}, dynamic shifting (as FLUX.1 dev's config).
- Folder: {total:.1f} MB in all. Loads with
  `FluxPipeline.from_pretrained("models/demo_dit", local_files_only=True)`; in SD Studio it is
  **Demo shapes DiT (offline)** (family `flux`)."""


def _defaults() -> str:
    """The app's defaults for this model, from ``presets/models.json``; the Distilled CFG is the request's default."""
    models = json.loads((ROOT / "presets" / "models.json").read_text())
    models = models["models"] if isinstance(models, dict) else models
    spec = next((m for m in models if m.get("source") == "models/demo_dit"), None)
    if not spec:
        return "It is not listed in `presets/models.json`."
    d = spec["defaults"]
    return (
        f"Its defaults in SD Studio (`presets/models.json`): {d['width']}x{d['height']}, {d['steps']} steps, CFG "
        f"{d['guidance_scale']:g} (true CFG off) and the app's Distilled CFG 3.5: every figure below is measured "
        "at them unless it names others."
    )


def _training(info: dict) -> str:
    cfg = info.get("schedule", {})
    status = "finished" if info.get("final") else f"exported mid-training ({info.get('stage')} step {info.get('step')})"
    return f"""`training/train_dit_demo.py` (the stages and the reasons are in `training/README.md`). Status:
**{status}**, exported {info.get("exported", "?")}.

1. `latents`: {cfg.get("n_latents", "?"):,} pictures of `training/data.py` encoded once with the VAE (posterior
   mean and std; the UNet demo's picture set), {RUN["latents_s"]} s.
2. `base`: transformer + T5 from scratch, {cfg.get("base_steps", "?"):,} steps x batch {cfg.get("batch", "?")}, AdamW
   lr {cfg.get("lr", "?")} ({cfg.get("warmup", "?")} warm-up steps, cosine), rectified flow (velocity noise - x0),
   logit-normal sigma shifted as the pipeline shifts at 16 tokens, 10% empty captions, the guidance input drawn per
   example (1-5), EMA {cfg.get("ema", "?")}. {RUN["base"]}.
3. `distill`: guidance distillation as FLUX.1 dev: the base EMA frozen as teacher, the student trained towards
   `v(empty) + g * (v(caption) - v(empty))` for the g it is given; {cfg.get("distill_steps", "?"):,} steps, lr
   {cfg.get("distill_lr", "?")}. {RUN["distill"]}.
4. `export`: the EMA weights, transformer stored in float16.

Started {RUN["started"]}, finished {RUN["finished"]}; {RUN["threads"]}. `base` and `distill` checkpoint every 4
minutes (`--save-every`) and the same command continues from the last checkpoint."""


def _main_figures(ev: dict) -> str:
    if "shape_colour_right" not in ev:
        return "Not measured yet: `python training/evaluate_dit.py --save`."
    sides = ", ".join(f"{k} {v:.0%}" for k, v in ev["named_side_by_position"].items())
    return f"""`python training/evaluate_dit.py --threads 2 --save` ({ev["prompts"]} prompts of the plain form
`a red circle on a blue background`, and {ev["prompts"]} more with a position phrase, the five positions in turn;
{ev["steps"]} steps, {ev["sampler"]}, true CFG {ev["true_cfg"]:g}, Distilled CFG {ev["distilled_cfg"]:g}; pictures
classified by nearest palette colour and shape-template IoU; measured {ev["measured"]}, {ev["seconds"]:.0f} s):

| figure | measured | issue #30's target |
|---|---|---|
| shape colour right | {_pct(ev["shape_colour_right"])} | |
| background colour right | {_pct(ev["background_colour_right"])} | |
| shape kind right | {_pct(ev["shape_kind_right"])} | |
| all three right | {_pct(ev["all_three_right"])} | >= 95% |
| shape on the named side | {_pct(ev["named_side"])} ({sides}) | >= 90% |"""


def _words(w: dict | None) -> str:
    if not w:
        return "- Position and size words: not measured yet (`python training/evaluate_dit.py --words --save`)."
    rows = ", ".join(
        f"`{data.POSITION_PHRASE[s]}` {v['with_word']:.0%} / {v['without_word']:.0%}" for s, v in w["positions"].items()
    )
    px = w["sizes_px"]
    return (
        f"- Positions (`{w['command']}`, {w['prompts_per_word']} prompts per phrase, {w['measured']}): the shape's "
        f"centre in the named third (`in the center`: within 6 px of the middle both ways) with the phrase / with the "
        f"same prompts and seeds without it: {rows}.\n"
        f"- Sizes (same command and prompts): mean bounding-box side `small` {px['small']:.1f} px, `large` "
        f"{px['large']:.1f} px, no size word {px['no size word']:.1f} px (trained: small 20-28, large 38-46, "
        "unworded 20-46)."
    )


def _negatives(n: dict | None) -> str:
    if not n:
        return "- Negative prompts: not measured yet (`python training/evaluate_dit.py --negatives --save`)."
    rows = []
    for scale, f in n["by_true_cfg"].items():
        rows.append(
            f"CFG {scale}: kept in {f['bare word']['kept_the_colour']:.0%} (bare word) / "
            f"{f['caption']['kept_the_colour']:.0%} (caption), pixels unchanged in "
            f"{f['bare word']['same_pixels']:.0%} / {f['caption']['same_pixels']:.0%}"
        )
    return (
        f"- Negative prompts (`{n['command']}`, {n['prompts']} prompts silent on colour, `a circle on a blue "
        "background`; the colour drawn without a negative prompt is named as the negative prompt, same seed, as a "
        "bare word `red` and as a caption `a red circle`; the request's CFG scale is FLUX's true CFG): "
        + "; ".join(rows)
        + ". At CFG 1 (the default) the negative prompt is not used at all; above 1 every step runs the "
        "transformer twice, with the prompt and with the negative prompt."
    )


def _img2img(f: dict | None) -> str:
    if not f:
        return "- img2img: not measured yet (`python training/evaluate_dit.py --img2img --save`)."
    own, other = f["same caption"], f["new colours"]
    rows = "\n".join(
        f"| {s} | {own[s]['keeps_input_colours']:.0%} | {own[s]['shape_in_place']:.0%} | "
        f"{own[s]['psnr_to_input_db']:.1f} dB | {other[s]['keeps_input_colours']:.0%} | "
        f"{other[s]['follows_prompt_colours']:.0%} | {other[s]['shape_in_place']:.0%} | "
        f"{other[s]['psnr_to_input_db']:.1f} dB |"
        for s in own
    )
    head = "| strength | own caption: input's colours | in place | PSNR | other colours: input's colours | "
    head += "prompt's colours | in place | PSNR |"
    return f"""- img2img (`{f["command"]}`, {f["cases"]} drawn pictures at each strength, with their own caption and
  with a caption of two other colours, same shape; "in place": the shape's centre within 4 px of where it was):

  {head}
  |---|---|---|---|---|---|---|---|
{chr(10).join("  " + line for line in rows.splitlines())}
"""


def _inpaint(f: dict | None) -> str:
    if not f:
        return "- Inpainting: not measured yet (`python training/evaluate_dit.py --inpaint --save`)."
    return (
        f"- Inpainting, {f['strategy']} (FluxInpaintPipeline; `{f['command']}`, {f['cases']} drawn pictures, the "
        f"shape's box plus 4 px repainted with a caption of a new shape colour, strength 1, mask blur "
        f"{f['mask_blur']}): largest pixel change where the blurred mask is 0: "
        f"{f['max_pixel_change_outside_blurred_mask']} (of 255); pixels unchanged outside the hard mask (the blur "
        "band blends) "
        f"{_pct(f['pixels_unchanged_outside_hard_mask'])}; the mask takes the prompt's colour "
        f"{_pct(f['mask_takes_prompt_colour'])}."
    )


def _specks(f: dict | None, f32: dict | None = None) -> str:
    if not f:
        return "- Specks: not measured yet (`python training/evaluate_dit.py --specks --save`)."
    rows = "\n".join(
        f"  | {k} | {v['with_speck']:.1%} | {v['caption_colours']:.0%} | {v['shape_kind']:.0%} |"
        for k, v in f["by_sampler"].items()
    )
    refused = "; ".join(f"{k} is refused (\"{v}\")" for k, v in f["refused"].items())
    return f"""- Specks per sampler (`{f["command"]}`, {f["pictures"]} plain prompts, the same seeds for each, 20
  steps; a speck is a blob of 3+ connected pixels of a third colour, `data.drawn_specks`). {refused}.

  | sampler | pictures with a speck | with the caption's two colours | right shape |
  |---|---|---|---|
{rows}
{_float32(f32)}"""


def _float32(f: dict | None) -> str:
    """The same speck measure with the pipeline in float32 (the app's ``--dtype float32``), where it was run."""
    if not f:
        return ""
    rows = ", ".join(f"{k} {v['with_speck']:.1%}" for k, v in f["by_sampler"].items())
    return f"\n  The same prompts and seeds in float32 (`{f['command']}`, {f['measured']}): {rows} with a speck.\n"


def _distilled(f: dict | None) -> str:
    if not f:
        return "- Distilled CFG: not measured yet (`python training/evaluate_dit.py --distilled-sweep --save`)."
    rows = "\n".join(
        f"| {g} | {_pct(v['shape_colour_right'])} | {_pct(v['background_colour_right'])} | "
        f"{_pct(v['shape_kind_right'])} | {_pct(v['all_three_right'])} | {_pct(v['named_side'])} | "
        f"{_pct(v['with_speck'])} |"
        for g, v in f["by_distilled_cfg"].items()
    )
    return f"""Distilled CFG (`{f["command"]}`, {f["prompts"]} plain + {f["prompts"]} positioned prompts per value, true
CFG 1, Euler, 20 steps; {f["measured"]}):

| Distilled CFG | colour | background | shape | all three | named side | with a speck |
|---|---|---|---|---|---|---|
{rows}"""


def _dtype(ev: dict) -> str:
    auto = [f for f in ev.values() if isinstance(f, dict) and "--dtype" not in f.get("command", "--dtype")]
    types = sorted({f["dtype"] for f in auto if f.get("dtype")})
    if not types:
        return ""
    return (
        f" The measures ran at the precision the app chose on the measuring CPU ({', '.join(types)}; "
        "`--dtype auto`)."
    )


def _flaws(ev: dict) -> str:
    """What it cannot do: the measured weak spots first, then the limits of what it was trained on."""
    out = []
    i2i = ev.get("img2img")
    if i2i:
        low = min(i2i["new colours"], key=float)
        v = i2i["new colours"][low]
        follows = [s for s, f in i2i["new colours"].items() if f["follows_prompt_colours"] >= 0.9]
        if v["keeps_input_colours"] < 0.9:
            out.append(
                f"- **img2img gives way early to a prompt that contradicts the picture**: at strength {low} a caption "
                f"of two other colours leaves the input's colours in {v['keeps_input_colours']:.0%} of the pictures "
                f"(PSNR {v['psnr_to_input_db']:.1f} dB); the prompt's colours win in 90% or more from strength "
                f"{min(follows, key=float) if follows else 'n/a'}. Low strengths keep a picture whose caption agrees."
            )
    neg = (ev.get("negatives") or {}).get("by_true_cfg", {}).get("1")
    if neg and neg["bare word"]["same_pixels"] == 1.0:
        out.append(
            "- **A negative prompt does nothing at CFG 1**, the default (FLUX.1 dev's way: Distilled CFG guides); "
            "raise CFG above 1 to use one (each step then runs the transformer twice)."
        )
    sp = ev.get("specks")
    if sp:
        bad = [k for k, v in sp["by_sampler"].items() if v["with_speck"] > 0.02]
        if bad:
            worst = max(sp["by_sampler"].values(), key=lambda v: v["with_speck"])["with_speck"]
            f32 = sorted(v["with_speck"] for v in (ev.get("specks_float32") or {}).get("by_sampler", {}).values())
            f32 = f"; {f32[0]:.0%}-{f32[-1]:.0%} in float32, so not a bfloat16 effect" if f32 else ""
            out.append(
                f"- **Off-palette blobs**: in more than 2% of the pictures with {', '.join(bad)} (up to {worst:.0%}; "
                f"{sp['pictures']} prompts each, figures above){f32}. The VAE is the UNet demo's, whose round trips "
                f"give a blob in {_vae_round_trips()}, so most come from the generated latents. Seen in the two "
                "Euler pictures with one (of 32): a green tint at a cyan triangle's corner, a pale patch inside a "
                "magenta cross."
            )
    dist = (ev.get("distilled") or {}).get("by_distilled_cfg", {})
    low = [g for g, v in dist.items() if v["all_three_right"] < 0.9]
    if low:
        rows = ", ".join(f"{g}: {dist[g]['all_three_right']:.0%} all three right" for g in low)
        out.append(f"- Distilled CFG too low draws worse ({rows}; figures above): keep the default 3.5.")
    w = ev.get("words")
    if w:
        weak = [data.POSITION_PHRASE[s] for s, v in w["positions"].items() if v["with_word"] < 0.9]
        if weak:
            out.append(f"- Position phrases under 90%: {', '.join(f'`{p}`' for p in weak)}.")
    out += [
        f"- It knows only its training vocabulary: colours {', '.join(data.COLOURS)}; shapes {', '.join(data.SHAPES)}; "
        f"sizes {', '.join(data.SIZES)}; positions {', '.join(f'`{p}`' for p in data.POSITION_PHRASE.values())}. "
        "Other words reach the T5 as token embeddings training never updated (unless they share its tokens).",
        "- Trained at 64x64 only (sizes must be multiples of 16 for FluxPipeline); other sizes were not measured.",
        "- One shape on a flat background: no scenes, no text, no photographs. `large` together with a position phrase "
        "never occurred in the training captions (a positioned shape is 20-32 px).",
        "- No ControlNet, Fill (inpainting) transformer or IP-Adapter of its own: inpainting blends latents.",
    ]
    return "\n".join(out)


def _vae_round_trips() -> str:
    ev = ROOT / "models" / "demo" / "evaluation.json"
    specks = json.loads(ev.read_text()).get("specks") if ev.exists() else None
    if not specks:
        return "(not measured)"
    return f"{specks['round_trip_with_speck']:.1%} of {specks['pictures']} (`models/demo/README.md`)"


def render(folder: Path) -> str:
    folder = Path(folder)
    info = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    ev = json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else {}
    return f"""---
library_name: diffusers
pipeline_tag: text-to-image
tags: [flux, text-to-image, tiny, synthetic]
---

# SD Studio demo DiT ("Demo shapes DiT (offline)")

A tiny model with FLUX.1 dev's structure (flow-matching transformer with a guidance embedding, CLIP + T5 text
encoders, guidance-distilled), trained from scratch on a CPU, so that SD Studio's `flux` family draws real,
prompt-following pictures offline and its tests can check meaning on the FLUX paths. The UNet demo (`models/demo`)
is its sibling: the same pictures, captions, VAE and CLIP.

## What it is

{_architecture(folder)}

## What it knows

64x64 pictures of one flat shape on a flat background of another colour. Prompt form: `a red circle on a blue
background`, optionally with a size word (`a small red circle ...`) or a position phrase
(`a red circle on the left on a blue background`). {_defaults()}

## How it was trained

{_training(info)}

## Measured quality

{_main_figures(ev)}

Other figures, each from the command beside it (`--save` merges them into `evaluation.json`, this card is rendered
from it by `python training/model_card_dit.py`); the same classifiers and scenes as the UNet demo's card
(`training/evaluate.py`).{_dtype(ev)}

{_words(ev.get("words"))}
{_negatives(ev.get("negatives"))}
{_img2img(ev.get("img2img"))}
{_inpaint(ev.get("inpaint"))}
{_specks(ev.get("specks"), ev.get("specks_float32"))}

{_distilled(ev.get("distilled"))}

Tests on these weights: `tests/test_demo_dit.py` (txt2img, position words, img2img strength, inpainting, Distilled
CFG, negative prompt with true CFG) and the slow `tests/test_demo_dit_lora.py`: a rank-8 FLUX LoRA on the
transformer's attention, trained in the test for 600 steps (the whole test: 74-80 s on one thread) on magenta shapes
captioned `purple`, loaded through `<lora:purple:1>`: {LORA_TEST}; without the tag the pixels are the base
model's exactly.

## Flaws and limits

{_flaws(ev)}
"""


def write(folder: Path) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render(folder))
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "demo_dit"))
    print("wrote", write(Path(p.parse_args(argv).model)))


if __name__ == "__main__":
    main()
