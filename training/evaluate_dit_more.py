"""The demo DiT's other measures, through the app's engine: position and size words, negative prompts with true CFG,
img2img strength, inpainting, specks per flow sampler, and the Distilled CFG value.

Called by ``training/evaluate_dit.py`` (its flags ``--words``, ``--negatives``, ``--img2img``, ``--inpaint``,
``--specks``, ``--distilled-sweep``, ``--more``), which makes the engine and hands every measure the request fields
it runs at (``base``: the model, 64x64, Euler, 20 steps, true CFG 1, Distilled CFG 3.5). The scenes, prompts,
classifiers and the "named third" test are the UNet demo's (``training/evaluate.py``, ``training/data.py``), so the
two models' figures compare.
"""

from __future__ import annotations

import time

import data
import numpy as np
from evaluate import _box_mask, _scenes, eval_prompts, on_side
from PIL import Image

from backend.images.ops import blur_mask
from backend.schema.errors import ValidationError
from backend.schema.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest

# The flow samplers FLUX runs (backend.schema.samplers, table "flow_sigmas"), with the schedules they offer there.
SPECK_SAMPLERS = (("Euler", "Automatic"), ("Euler", "Karras"), ("DPM++ 2M", "Automatic"), ("UniPC", "Automatic"),
                  ("UniPC", "Karras"))
REFUSED_SAMPLERS = ("Heun",)  # in the flow table of SD 3.x only: FluxPipeline hands the scheduler its own sigmas
NEGATIVE_SCALES = (1.0, 2.5, 4.0)  # the request's CFG scale = FLUX's true CFG (1 = off: the negative prompt unused)
STRENGTHS = (0.1, 0.3, 0.6, 0.9)
DISTILLED_VALUES = (1.0, 3.5, 6.0)


def picture(engine, base: dict, request_cls, prompt: str, seed: int, **fields) -> np.ndarray:
    """One picture of ``request_cls`` at ``base`` with ``fields`` on top, as RGB uint8."""
    request = request_cls(**{**base, **fields, "prompt": prompt, "seed": seed})
    return np.asarray(engine.run(request).images[0].convert("RGB"))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _positioned(got: dict, side: str) -> bool:
    return got["colour"] is not None and on_side(side, got["cx"], got["cy"])


def measure_words(engine, base: dict, n: int = 16, seed: int = 0) -> dict:
    """Each position phrase, and ``small`` / ``large``, over ``n`` colour triples; the same prompts and seeds without
    the word give the chance level (positions) and the unworded size."""
    triples = eval_prompts(n, seed + 1)

    def classified(template: str) -> list[dict]:
        prompts = [template.format(c=c, s=s, b=b) for c, s, b in triples]
        return [
            data.classify_picture(picture(engine, base, Txt2ImgRequest, prompt, seed * 10007 + i))
            for i, prompt in enumerate(prompts)
        ]

    plain = classified("a {c} {s} on a {b} background")
    positions = {}
    for side in data.POSITIONS:
        got = classified("a {c} {s} " + data.POSITION_PHRASE[side] + " on a {b} background")
        positions[side] = {
            "with_word": float(np.mean([_positioned(g, side) for g in got])),
            "without_word": float(np.mean([_positioned(g, side) for g in plain])),
        }
    sizes = {}
    for word in data.SIZES:
        got = classified("a " + word + " {c} {s} on a {b} background")
        sizes[word] = float(np.mean([g["size"] for g in got if g["colour"] is not None]))
    sizes["no size word"] = float(np.mean([g["size"] for g in plain if g["colour"] is not None]))
    return {"prompts_per_word": n, "positions": positions, "sizes_px": sizes, "measured": now()}


def measure_negatives(engine, base: dict, n: int = 32, seed: int = 0, scales=NEGATIVE_SCALES) -> dict:
    """For prompts silent on colour ("a circle on a blue background"), the colour drawn without a negative prompt is
    named as the negative prompt, same seed, as a bare word ("red") and as a caption ("a red circle"), at each true
    CFG scale: the share of pictures that kept it, and the share whose pixels did not change at all."""
    triples = eval_prompts(n, seed + 2)
    prompts = [f"a {s} on a {b} background" for _, s, b in triples]
    by_scale = {}
    for scale in scales:
        at = {**base, "guidance_scale": scale}
        plain = [picture(engine, at, Txt2ImgRequest, p, seed * 10007 + i) for i, p in enumerate(prompts)]
        drawn = [data.classify_picture(im)["colour"] for im in plain]
        cases = [i for i, c in enumerate(drawn) if c is not None]
        forms = {"bare word": {i: drawn[i] for i in cases},
                 "caption": {i: f"a {drawn[i]} {triples[i][1]}" for i in cases}}
        figures = {"prompts": len(cases)}
        for name, negatives in forms.items():
            got = {i: picture(engine, at, Txt2ImgRequest, prompts[i], seed * 10007 + i, negative_prompt=negatives[i])
                   for i in cases}
            figures[name] = {
                "kept_the_colour": float(np.mean([data.classify_picture(got[i])["colour"] == drawn[i] for i in cases])),
                "same_pixels": float(np.mean([np.array_equal(got[i], plain[i]) for i in cases])),
            }
        by_scale[f"{scale:g}"] = figures
    return {"prompts": n, "by_true_cfg": by_scale, "measured": now()}


def _img2img_case(out: np.ndarray, source: np.ndarray, before: dict, want: tuple[str, str]) -> dict:
    got = data.classify_picture(out)
    err = (out.astype(np.float64) - source) / 255
    return {
        "keeps_input_colours": got["colour"] == before["colour"] and got["background"] == before["background"],
        "follows_prompt_colours": (got["colour"], got["background"]) == want,
        "shape_in_place": got["colour"] is not None
        and abs(got["cx"] - before["cx"]) <= 4 and abs(got["cy"] - before["cy"]) <= 4,
        "psnr_to_input_db": 10 * np.log10(1 / max(float((err**2).mean()), 1e-10)),
        "mean_abs_difference": float(np.abs(err).mean() * 255),
    }


def measure_img2img(engine, base: dict, n: int = 24, seed: int = 0, strengths=STRENGTHS) -> dict:
    """Drawn pictures of ``evaluate._scenes`` through img2img at each strength, with two prompts: the picture's own
    caption (how much of it stays) and one naming two other colours, same shape (when it gives way): the share
    that keeps the input's two colours, that has the prompt's, whose shape stays within 4 px of where it was, and
    the PSNR / mean absolute difference (0-255) to the input."""
    cases = _scenes(n, seed)
    prompts = {"same caption": lambda sc, c, b: sc.caption, "new colours": lambda sc, c, b: data.plain_caption(
        c, sc.shape, b)}
    figures = {"cases": n}
    for name, prompt_of in prompts.items():
        by_strength = {}
        for strength in strengths:
            rows = []
            for i, (scene, colour, background) in enumerate(cases):
                source = data.render(scene)
                want = (scene.colour, scene.background) if name == "same caption" else (colour, background)
                out = picture(engine, base, Img2ImgRequest, prompt_of(scene, colour, background), seed * 10007 + i,
                              image=Image.fromarray(source), strength=strength)
                rows.append(_img2img_case(out, source, data.classify_picture(source), want))
            by_strength[f"{strength:g}"] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        figures[name] = by_strength
    return {**figures, "measured": now()}


def measure_inpaint(engine, base: dict, n: int = 24, seed: int = 0, mask_blur: int = 4) -> dict:
    """The shape's box (4 px padding) repainted in a new colour, strength 1, the app's default mask blur: the largest
    pixel change where the blurred mask is 0, the share of pixels kept outside the hard mask (the blur band
    blends), and whether the mask takes the prompt's colour (``evaluate.evaluate_inpaint``'s test)."""
    cases = _scenes(n, seed)
    took, max_outside, kept_hard = 0, 0, []
    for i, (scene, colour, _) in enumerate(cases):
        source, mask = data.render(scene), _box_mask(scene)
        prompt = data.plain_caption(colour, scene.shape, scene.background)
        out = picture(engine, base, InpaintRequest, prompt, seed * 10007 + i, image=Image.fromarray(source),
                      mask=Image.fromarray(mask), strength=1.0, mask_blur=mask_blur)
        soft = np.asarray(blur_mask(Image.fromarray(mask), mask_blur))
        diff = np.abs(out.astype(int) - source.astype(int)).max(-1)
        max_outside = max(max_outside, int(diff[soft == 0].max(initial=0)))
        kept_hard.append(float((diff[mask == 0] == 0).mean()))
        inside = mask > 127
        counts = np.bincount(data._palette_labels(out)[inside], minlength=len(data.COLOURS))
        counts[data.COLOURS.index(scene.background)] = 0
        took += data.COLOURS[int(counts.argmax())] == colour and counts.max() > 0.1 * inside.sum()
    return {
        "cases": n,
        "strategy": "latent blending",
        "mask_blur": mask_blur,
        "max_pixel_change_outside_blurred_mask": max_outside,
        "pixels_unchanged_outside_hard_mask": float(np.mean(kept_hard)),
        "mask_takes_prompt_colour": took / n,
        "measured": now(),
    }


def measure_specks(engine, base: dict, n: int = 64, seed: int = 0, samplers=SPECK_SAMPLERS) -> dict:
    """Blobs of a third colour (``data.drawn_specks``) in pictures of the same prompts and seeds through each flow
    sampler FLUX offers, with the share that has the caption's two colours; the samplers FLUX refuses, by name."""
    triples = eval_prompts(n, seed)
    by_sampler = {}
    for sampler, schedule in samplers:
        got = [
            picture(engine, base, Txt2ImgRequest, data.plain_caption(c, s, b), seed * 10007 + i, sampler=sampler,
                    schedule=schedule)
            for i, (c, s, b) in enumerate(triples)
        ]
        drawn = [data.classify_picture(im) for im in got]
        name = sampler if schedule == "Automatic" else f"{sampler} {schedule}"
        by_sampler[name] = {
            "with_speck": float(np.mean([data.drawn_specks(im, c, b) > 0 for im, (c, _, b) in zip(got, triples,
                                                                                                   strict=True)])),
            "caption_colours": float(np.mean([d["colour"] == c and d["background"] == b
                                              for d, (c, _, b) in zip(drawn, triples, strict=True)])),
            "shape_kind": float(np.mean([d["shape"] == s for d, (_, s, _) in zip(drawn, triples, strict=True)])),
        }
    refused = {}
    for sampler in REFUSED_SAMPLERS:
        try:
            picture(engine, base, Txt2ImgRequest, "a red circle on a blue background", 0, sampler=sampler)
        except (ValidationError, KeyError, ValueError) as error:
            refused[sampler] = str(error)
    return {"pictures": n, "by_sampler": by_sampler, "refused": refused, "measured": now()}


def measure_distilled(engine, base: dict, n: int = 64, seed: int = 0, values=DISTILLED_VALUES) -> dict:
    """Colour, background, shape and specks over ``n`` plain prompts, and the named side over ``n`` positioned ones,
    at each Distilled CFG value (true CFG stays 1)."""
    plain, positioned = eval_prompts(n, seed), eval_prompts(n, seed + 1)
    by_value = {}
    for value in values:
        at = {**base, "distilled_cfg_scale": value}
        right = {"colour": 0, "background": 0, "shape": 0, "all": 0, "speck": 0}
        for i, (c, s, b) in enumerate(plain):
            im = picture(engine, at, Txt2ImgRequest, data.plain_caption(c, s, b), seed * 10007 + i)
            got = data.classify_picture(im)
            ok = (got["colour"] == c, got["background"] == b, got["shape"] == s)
            for key, hit in zip(("colour", "background", "shape"), ok, strict=True):
                right[key] += hit
            right["all"] += all(ok)
            right["speck"] += data.drawn_specks(im, c, b) > 0
        side_hits = 0
        for i, (c, s, b) in enumerate(positioned):
            side = data.POSITIONS[i % len(data.POSITIONS)]
            prompt = f"a {c} {s} {data.POSITION_PHRASE[side]} on a {b} background"
            side_hits += _positioned(data.classify_picture(picture(engine, at, Txt2ImgRequest, prompt,
                                                                   seed * 10007 + i)), side)
        by_value[f"{value:g}"] = {
            "shape_colour_right": right["colour"] / n,
            "background_colour_right": right["background"] / n,
            "shape_kind_right": right["shape"] / n,
            "all_three_right": right["all"] / n,
            "with_speck": right["speck"] / n,
            "named_side": side_hits / n,
        }
    return {"prompts": n, "by_distilled_cfg": by_value, "measured": now()}
