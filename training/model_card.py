"""Render ``models/demo/README.md`` from ``training.json`` and ``evaluation.json`` in the model folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402


def _pct(v):
    return "not measured yet" if v is None else f"{v:.1%}"


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 1e6


def render(folder: Path) -> str:
    folder = Path(folder)
    info = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    ev = json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else {}
    t2i = ev.get("txt2img", {})
    cfg = info.get("config", {})
    vae = info.get("vae", {})
    unet_steps = info.get("unet_steps")
    finished = info.get("unet_finished", False)
    status = "finished" if finished else f"exported mid-training (step {unet_steps} of {cfg.get('unet_steps', '?')})"
    variants = []
    if (folder / "unet_inpaint").is_dir():
        variants.append(
            f"- `unet_inpaint/`: 9-channel inpainting UNet, {info.get('inpaint_steps', '?')} steps "
            "(extra input channels zero-initialised from the base UNet, random masks)."
        )
    if (folder / "controlnet_canny").is_dir():
        variants.append(
            f"- `controlnet_canny/`: canny ControlNet (`ControlNetModel.from_unet`), "
            f"{info.get('controlnet_steps', '?')} steps with {info.get('controlnet_caption_dropout', 0.1):.0%} of the "
            "captions empty (so it learns to read the map, not only the text); SD Studio lists it as this model's "
            "canny ControlNet."
        )
    variants_text = "\n".join(variants) or "- none yet (the inpaint and controlnet stages have not run)"
    psnr = vae.get("psnr_db")
    return f"""---
library_name: diffusers
tags: [stable-diffusion, text-to-image, tiny, synthetic]
---

# SD Studio demo model

A tiny Stable Diffusion 1.x trained from scratch on a CPU, so that SD Studio draws real,
prompt-following pictures offline and its tests can check meaning. It has exactly SD 1.x's structure
(AutoencoderKL, UNet2DConditionModel with cross-attention, CLIPTextModel + CLIPTokenizer,
scaled-linear DDIM scheduler config) and loads with

```python
StableDiffusionPipeline.from_pretrained("models/demo", local_files_only=True, use_safetensors=True)
```

Status: **{status}**. Weights: {_size_mb(folder):.1f} MB of safetensors.

## What it knows

64x64 pictures of one flat shape on a flat background of another colour.

- Prompt form: `a red circle on a blue background`; optional size word: `a small red circle on a blue background`.
- Colours: {", ".join(data.COLOURS)} (a fixed palette; other colour words were never seen).
- Shapes: {", ".join(data.SHAPES)}.
{_word_figures(ev.get("words"))}
{_negative_figures((ev.get("words") or {}).get("negatives"))}

{_settings(ev)}

## How it was trained

`training/train_demo.py` (seed {info.get("seed", 0)}, device {info.get("device", "cpu")}; stage times in `training/README.md`),
from pictures generated on the fly by `training/data.py`:

1. VAE (8x: 64x64x3 -> 8x8x4, {vae.get("params_m", 0):.2f}M params): {cfg.get("vae_steps", "?")} steps x batch
   {cfg.get("vae_batch", "?")}, L1 + MSE + tiny KL; held-out PSNR {f"{psnr:.1f} dB" if psnr else "n/a"};
   `scaling_factor` = 1 / std of the cached latents.
{_decoder_line(info.get("decoder"), cfg)}
2. Latent cache of {cfg.get("n_latents", "?")} pictures, then UNet (2.77M params) + text encoder (0.12M)
   jointly: {_first_cycle(unet_steps, cfg)} steps x batch {cfg.get("unet_batch", "?")}, AdamW lr {cfg.get("unet_lr", "?")}
   (warm-up, cosine to 20%), epsilon prediction, min-SNR-5 weighting, caption dropout 10%, EMA {cfg.get("ema", "?")}
   (the exported weights are the EMA).
{_refine_line(cfg)}

Variants in this folder:
{variants_text}

## Measured quality

`python training/evaluate.py --card` ({t2i.get("prompts", "?")} prompts of the plain form, {t2i.get("steps", "?")} steps,
{t2i.get("scheduler", "?")}, guidance {t2i.get("guidance_scale", "?")}; pictures classified by nearest palette
colour and shape-template IoU; measured {ev.get("measured", "never")} on the weights of UNet step
{ev.get("measured_unet_steps", "?")}):

| figure | measured | target |
|---|---|---|
| shape colour right | {_pct(t2i.get("shape_colour_right"))} | >= 90% |
| background colour right | {_pct(t2i.get("background_colour_right"))} | >= 90% |
| shape kind right | {_pct(t2i.get("shape_kind_right"))} | >= 70% |
| all three right | {_pct(t2i.get("all_three_right"))} | |

{_other_figures(ev)}

{_speck_figures(ev.get("specks"))}
"""


def _first_cycle(unet_steps, cfg: dict) -> str:
    """The first cycle's steps: all of them once the export is past it (the second cycle counts on from there)."""
    first = cfg.get("unet_steps", "?")
    if isinstance(unet_steps, int) and isinstance(first, int) and unet_steps >= first:
        return str(first)
    return f"{unet_steps} of {first}"


def _refine_line(cfg: dict) -> str:
    if not cfg.get("refine_steps"):
        return "   (no second cycle)"
    return (
        f"   Then a second cycle (warm restart from those EMA weights, fresh optimizer): {cfg['refine_steps']} steps, "
        f"lr {cfg.get('refine_lr', '?')}, with {cfg.get('refine_fragments', 0):.0%} of the captions replaced by short "
        "fragments still true of the picture (`red`, `a red circle`, `blue background`)."
    )


def _settings(ev: dict) -> str:
    f = ev.get("txt2img")
    if not f:
        return "Default size 64x64 (settings not measured yet: `python training/evaluate.py --card`)."
    settings = (
        f"Default size 64x64, {f['steps']} steps, guidance {f['guidance_scale']:g}: the app's defaults for this model "
        "and the settings of every figure on this card unless it names others."
    )
    high = (ev.get("specks") or {}).get("high_guidance")
    if high:
        settings += (
            f" Keep guidance near that: at {high['guidance_scale']:g} some samplers overshoot into off-palette blobs "
            "(figures at the end)."
        )
    return settings


def _negative_figures(negatives: dict | None) -> str:
    if not negatives:
        return "- Negative prompts: not measured yet (`python training/evaluate.py --words --card`)."
    kept = negatives["kept_the_colour"]
    works = max(kept.values()) <= 0.25
    lead = "- Negative prompts steer away from a colour" if works else "- **Negative prompts do not steer reliably**"
    return (
        f"{lead}: for {negatives['prompts']} prompts silent on colour (`a circle on a blue background`), the colour "
        f"drawn without a negative prompt, named as the negative prompt with the same seed, stayed in "
        f"{kept['bare word']:.0%} of the pictures as a bare word (`red`) and {kept['caption']:.0%} as a caption "
        "(`a red circle`). Trained with 10% empty captions (classifier-free guidance)."
    )


def _decoder_line(decoder: dict | None, cfg: dict) -> str:
    if not decoder:
        return "   (no decoder-only stage)"
    return (
        f"   Then the decoder alone, {decoder['steps']} steps, lr {cfg.get('decoder_lr', '?')}, the encoder frozen and "
        f"the latents noised a little (the UNet's never match the encoder's exactly): round trips "
        f"{_trip(decoder['before'])} before, {_trip(decoder['after'])} after."
    )


def _trip(figures: dict) -> str:
    return f"{figures['psnr_db']:.1f} dB with a speck in {figures['with_speck']:.1%}"


def _word_figures(words: dict | None) -> str:
    phrases = ", ".join(f"`{p}`" for p in data.POSITION_PHRASE.values())
    if not words:
        return (
            f"- Sizes: {', '.join(data.SIZES)}; position words ({phrases}) were in the training captions. Whether the "
            "model follows them is not measured yet (`python training/evaluate.py --words --card`)."
        )
    px = words["sizes_px"]
    n = words["prompts_per_word"]
    sizes = (
        f"- Sizes: small, large. Measured mean bounding-box side: small {px['small']:.1f} px, large "
        f"{px['large']:.1f} px, no size word {px['no size word']:.1f} px ({n} prompts each).\n"
    )
    rows = ", ".join(
        f"`{data.POSITION_PHRASE[side]}` {v['with_word']:.0%} / {v['without_word']:.0%}"
        for side, v in words["positions"].items()
    )
    works = [data.POSITION_PHRASE[side] for side, v in words["positions"].items() if v["with_word"] >= 0.9]
    weak = [data.POSITION_PHRASE[side] for side, v in words["positions"].items() if v["with_word"] < 0.9]
    verdict = (
        f"- Positions: the shape's centre in the named third (for `in the center`: within 6 px of the middle both ways) with "
        f"the word / with the same prompts and seeds without it, {n} prompts each: {rows}.\n"
    )
    if works:
        verdict += (
            f"  Reliable (90% or more): {', '.join(f'`{w}`' for w in works)}. A positioned shape is small (20-32 px): "
            "`large` with a position word was never in the training captions.\n"
        )
    if weak:
        verdict += f"  **Not reliable** (under 90%): {', '.join(f'`{w}`' for w in weak)}.\n"
    command = f"python training/evaluate.py --words --prompts {4 * n} --card"  # n prompts for each word
    return sizes + verdict + f"  Measured by `{command}` on {words['measured']}."


def _speck_figures(specks: dict | None) -> str:
    if not specks:
        return "VAE specks: not measured yet (`python training/evaluate.py --specks --card`)."
    trips = (
        f"VAE encode-decode round trips of {specks['pictures']} clean drawn pictures: {specks['round_trip_with_speck']:.1%}"
        " have a blob of 3 or more connected pixels far from the two colours and their edge blends (0% of the clean "
        f"pictures; round-trip PSNR {specks['round_trip_psnr_db']:.1f} dB)."
    )
    samplers = specks["generated_by_sampler"]
    guidance, steps = specks["guidance_scale"], specks["steps"]

    def table(by: dict) -> str:
        return ", ".join(f"{k} {v['with_speck']:.1%} / {v['caption_colours']:.0%}" for k, v in by.items())

    generated = (
        f" Generated pictures ({specks['pictures']} prompts, the same seeds for every sampler, {steps} steps, guidance "
        f"{guidance:g}, the app's default for this model), with a blob of a third colour / with the caption's two "
        f"colours: {table(samplers)}."
    )
    high = specks.get("high_guidance")
    if high:
        over = [k for k, v in high["generated_by_sampler"].items() if v["with_speck"] > 0.05]
        generated += f" The same at guidance {high['guidance_scale']:g}: {table(high['generated_by_sampler'])}."
        if over:
            generated += (
                f" So keep this model's guidance near {guidance:g}: higher, {', '.join(over)} overshoot into blobs."
            )
    good = [k for k, v in samplers.items() if v["with_speck"] < 0.05]
    if good and len(good) < len(samplers):
        generated += f" Under 5% with {', '.join(good)}: use those with this model."
    worst = max(specks["round_trip_with_speck"], *(v["with_speck"] for v in samplers.values()))
    lead = "**Known flaw: off-palette blobs in generated pictures.** " if worst > 0.02 else "Off-palette specks: "
    return (
        f"{lead}{trips}{generated} Measured by `python training/evaluate.py --specks --prompts {specks['pictures']} "
        f"--card` on {specks['measured']}."
    )


def _other_figures(ev: dict) -> str:
    lines = []
    i2i = ev.get("img2img")
    if i2i:
        lines.append(
            f"- img2img ({i2i['cases']} pictures, a new prompt of other colours): strength 0.2 keeps the input's "
            f"colours {_pct(i2i['strength_0.2_keeps_input_colours'])} (PSNR to input "
            f"{i2i['strength_0.2_psnr_db']:.1f} dB); strength 0.9 follows the new prompt's colours "
            f"{_pct(i2i['strength_0.9_follows_new_prompt_colours'])}."
        )
    inp = ev.get("inpaint")
    if inp:
        for name, f in inp.items():
            if isinstance(f, dict):
                lines.append(
                    f"- inpaint, {name} ({inp['cases']} pictures, the shape's box repainted in a new colour): "
                    f"mask takes the prompt's colour {_pct(f['mask_takes_prompt_colour'])}, outside pixels kept "
                    f"{_pct(f['outside_pixels_kept'])}."
                )
    cn = ev.get("controlnet")
    if cn and "edge_iou_with_controlnet" in cn:
        lines.append(
            f"- ControlNet canny ({cn['cases']} pictures): edge IoU (1 px tolerance) with the control map "
            f"{cn['edge_iou_with_controlnet']:.2f} with the ControlNet vs {cn['edge_iou_without_controlnet']:.2f} without."
        )
    if not lines:
        text = (
            "img2img, inpainting and ControlNet figures: not measured yet (`python training/evaluate.py --all --card`)."
        )
    else:
        cases = next(f["cases"] for f in (i2i, inp, cn) if f and "cases" in f)
        text = f"Other figures (`python training/evaluate.py --all --cases {cases} --card`):\n\n" + "\n".join(lines)
    return text + _sampler_table(ev.get("samplers"))


def _sampler_table(samplers: dict | None) -> str:
    if not samplers:
        return ""
    rows = [
        f"{name:14} {f['steps']:5}  {f['shape_colour_right']:11.0%}  {f['background_colour_right']:10.0%}"
        f"  {f['shape_kind_right']:10.0%}"
        for name, f in samplers["table"].items()
    ]
    table = "\n".join([f"{'sampler':14} steps  shape colour  background  shape kind", *rows])
    return f"""

## Every sampler of SD Studio

`python training/evaluate.py --samplers --card` ({samplers["prompts"]} prompts, guidance {samplers["guidance"]:g},
schedule Automatic; measured {samplers["measured"]}). LMS and PLMS need 40 steps on this small model (29-50% at 10-20 steps); LCM is a few-step
sampler for LCM-distilled models, which this is not.

```
{table}
```
"""


def write(folder: Path):
    folder = Path(folder)
    (folder / "README.md").write_text(render(folder))
