"""Deterministic synthetic captioned pictures: the demo model's whole world.

One picture = one flat-coloured shape on a flat background of another colour, e.g.
"a red circle on a blue background" or, with optional words, "a small red circle on the left on a
blue background". Colours come from a fixed palette of eight well-separated colours (the corners of
the RGB cube, slightly softened), shapes have a generous minimum size, and every word of every
caption is a single token of ``backend.models.tiny.build_tokenizer()``.

Sample ``i`` of seed ``s`` is always the same picture (``numpy.random.default_rng((s, i))``), so the
training set, the cached latents and the evaluation prompts are reproducible.

The same module is used by the evaluation: :func:`classify_picture` recovers (shape colour,
background colour, shape kind) from a generated picture with simple image statistics (nearest
palette colour of the border / interior pixels, template IoU against the renderer's own shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RESOLUTION = 64
SUPERSAMPLE = 4  # render at 4x and box-filter down: anti-aliased edges

# Eight well-separated colours: the corners of the RGB cube, softened a little.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "cyan": (30, 210, 220),
    "magenta": (210, 40, 210),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": (20, 28), "large": (38, 46)}  # bounding-box side in pixels
SIZE_RANGE = (20, 46)  # when the caption names no size
POSITIONED_SIZE_RANGE = (20, 32)  # no size word but a position word: small enough for the named third
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
MARGIN = 2


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    size: int  # bounding-box side, pixels
    cx: float
    cy: float
    size_word: str | None = None
    position_word: str | None = None

    @property
    def caption(self) -> str:
        words = ["a"]
        if self.size_word:
            words.append(self.size_word)
        words += [self.colour, self.shape]
        if self.position_word:
            words.append(POSITION_PHRASE[self.position_word])
        words += ["on", "a", self.background, "background"]
        return " ".join(words)


def plain_caption(colour: str, shape: str, background: str) -> str:
    """The form users type first: "a red circle on a blue background"."""
    return f"a {colour} {shape} on a {background} background"


def sample_scene(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    background: str | None = None,
    p_size_word: float = 0.35,
    p_position_word: float = 0.5,
) -> Scene:
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or COLOURS[rng.integers(len(COLOURS))]
    if background is None:
        others = [c for c in COLOURS if c != colour]
        background = others[rng.integers(len(others))]
    # A position word always puts the centre inside the named third (the evaluation's test), so the shape is
    # small enough to get there: "large" never goes with a position, and an unsized positioned shape is 20-32 px.
    # (v1 drew any size and clamped: a third of its "on the left" pictures had the centre outside the left third.)
    position_word = None
    if rng.random() < p_position_word:
        position_word = POSITIONS[rng.integers(len(POSITIONS))]
    size_word = None
    if rng.random() < p_size_word:
        size_word = "small" if position_word else ("small", "large")[rng.integers(2)]
        lo, hi = SIZES[size_word]
    else:
        lo, hi = POSITIONED_SIZE_RANGE if position_word else SIZE_RANGE
    size = int(rng.integers(lo, hi + 1))
    lo_c, hi_c = MARGIN + size / 2, RESOLUTION - MARGIN - size / 2
    cx, cy = rng.uniform(lo_c, hi_c), rng.uniform(lo_c, hi_c)
    third = RESOLUTION / 3
    if position_word == "left":
        cx = rng.uniform(lo_c, third - 1)
    elif position_word == "right":
        cx = rng.uniform(2 * third + 1, hi_c)
    elif position_word == "top":
        cy = rng.uniform(lo_c, third - 1)
    elif position_word == "bottom":
        cy = rng.uniform(2 * third + 1, hi_c)
    elif position_word == "center":
        mid = RESOLUTION / 2
        cx, cy = rng.uniform(mid - 4, mid + 4), rng.uniform(mid - 4, mid + 4)
    return Scene(shape, colour, background, size, float(cx), float(cy), size_word, position_word)


def shape_mask(shape: str, size: float, cx: float, cy: float, resolution: int = RESOLUTION) -> np.ndarray:
    """Anti-aliased coverage mask (float32 in [0, 1], HxW) of one shape."""
    s = SUPERSAMPLE
    big = Image.new("L", (resolution * s, resolution * s), 0)
    draw = ImageDraw.Draw(big)
    h = size * s / 2
    x, y = cx * s, cy * s
    if shape == "circle":
        draw.ellipse([x - h, y - h, x + h, y + h], fill=255)
    elif shape == "square":
        draw.rectangle([x - h, y - h, x + h, y + h], fill=255)
    elif shape == "triangle":
        draw.polygon([(x, y - h), (x + h, y + h), (x - h, y + h)], fill=255)
    elif shape == "cross":
        w = h / 3
        draw.rectangle([x - h, y - w, x + h, y + w], fill=255)
        draw.rectangle([x - w, y - h, x + w, y + h], fill=255)
    elif shape == "diamond":
        draw.polygon([(x, y - h), (x + h, y), (x, y + h), (x - h, y)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    small = big.resize((resolution, resolution), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene) -> np.ndarray:
    """The picture of a scene: uint8 HxWx3."""
    m = shape_mask(scene.shape, scene.size, scene.cx, scene.cy)[..., None]
    fg = np.array(PALETTE[scene.colour], np.float32)
    bg = np.array(PALETTE[scene.background], np.float32)
    return np.clip(m * fg + (1 - m) * bg + 0.5, 0, 255).astype(np.uint8)


def scene(seed: int, index: int) -> Scene:
    """The scene of picture ``index`` of the set ``seed`` (as :func:`sample` draws it, without rendering)."""
    return sample_scene(np.random.default_rng((seed, index)))


def fragment(scene: Scene, rng: np.random.Generator) -> str:
    """A short caption that is still true of the picture: "red", "a red circle", "blue background", ...

    Full captions only teach the model sentences; a user's negative prompt is often one word ("red"). Trained on
    fragments too, a bare colour word means that colour, so as a negative prompt it steers away from it.
    """
    c, s, b = scene.colour, scene.shape, scene.background
    forms = [c, f"{c} {s}", f"a {c} {s}", s, f"a {s}", f"{b} background", f"a {s} on a {b} background"]
    if scene.position_word:
        forms.append(f"a {c} {s} {POSITION_PHRASE[scene.position_word]}")
    return forms[rng.integers(len(forms))]


def sample(seed: int, index: int, **kwargs) -> tuple[np.ndarray, str, Scene]:
    """Picture ``index`` of the set ``seed``: (uint8 HxWx3, caption, scene)."""
    rng = np.random.default_rng((seed, index))
    scene = sample_scene(rng, **kwargs)
    return render(scene), scene.caption, scene


def batch(seed: int, start: int, count: int) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``count`` consecutive samples as (uint8 NxHxWx3, captions, scenes)."""
    pics, caps, scenes = [], [], []
    for i in range(start, start + count):
        p, c, s = sample(seed, i)
        pics.append(p)
        caps.append(c)
        scenes.append(s)
    return np.stack(pics), caps, scenes


def to_tensor(pictures: np.ndarray):
    """uint8 NxHxWx3 -> float tensor Nx3xHxW in [-1, 1] (the VAE's input range)."""
    import torch

    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ----------------------------------------------------------------------------------------------
# Classifiers from simple image statistics (used by the evaluation)


def nearest_colour(rgb) -> str:
    rgb = np.asarray(rgb, np.float32)
    names = list(PALETTE)
    d = [np.sum((rgb - np.array(PALETTE[n], np.float32)) ** 2) for n in names]
    return names[int(np.argmin(d))]


def _palette_labels(picture: np.ndarray) -> np.ndarray:
    pal = np.array([PALETTE[n] for n in COLOURS], np.float32)  # Kx3
    d = ((picture.astype(np.float32)[..., None, :] - pal) ** 2).sum(-1)  # HxWxK
    return d.argmin(-1)


def classify_picture(picture) -> dict:
    """(shape colour, background colour, shape kind) of a picture, from simple statistics.

    Background = the palette colour most common along the picture border. Shape colour = the most
    common palette colour among the remaining pixels. Shape kind = the renderer's template
    (any of ``SHAPES``, fitted to the shape pixels' bounding box) with the highest IoU.
    """
    pic = np.asarray(picture.convert("RGB") if isinstance(picture, Image.Image) else picture)
    if pic.shape[:2] != (RESOLUTION, RESOLUTION):
        pic = np.asarray(Image.fromarray(pic).resize((RESOLUTION, RESOLUTION), Image.BILINEAR))
    labels = _palette_labels(pic)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(COLOURS)).argmax())
    inner = labels[labels != bg]
    if inner.size < 20:
        return {"colour": None, "background": COLOURS[bg], "shape": None, "shape_iou": 0.0, "area": int(inner.size)}
    fg = int(np.bincount(inner, minlength=len(COLOURS)).argmax())
    mask = labels == fg
    ys, xs = np.nonzero(mask)
    # Robust bounding box: 2nd-98th percentiles.
    x0, x1 = np.percentile(xs, [1, 99])
    y0, y1 = np.percentile(ys, [1, 99])
    size = max(x1 - x0, y1 - y0) + 1
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    best, best_iou = None, -1.0
    for shape in SHAPES:
        for scale in (0.9, 1.0, 1.1):
            t = shape_mask(shape, size * scale, cx, cy) > 0.5
            iou = float((t & mask).sum() / max(1, (t | mask).sum()))
            if iou > best_iou:
                best, best_iou = shape, iou
    return {
        "colour": COLOURS[fg],
        "background": COLOURS[bg],
        "shape": best,
        "shape_iou": best_iou,
        "area": int(mask.sum()),
        "size": float(size),  # robust bounding-box side, pixels
        "cx": float(cx),
        "cy": float(cy),
    }


SPECK_DISTANCE = 60.0  # RGB distance from the shape/background blend line that counts as off-palette
SPECK_PIXELS = 3  # a blob of this many connected off-palette pixels is a speck


def specks(picture: np.ndarray, colour: str, background: str) -> int:
    """Off-palette blobs of >= ``SPECK_PIXELS`` pixels in a picture of a ``colour`` shape on ``background``.

    A clean picture holds the two colours and, on anti-aliased edges, blends of them: points on the line segment
    between the two in RGB. A pixel farther than ``SPECK_DISTANCE`` from that segment is off-palette; blobs are its
    8-connected components.
    """
    from scipy import ndimage

    a = np.array(PALETTE[background], np.float32)
    b = np.array(PALETTE[colour], np.float32)
    p = np.asarray(picture, np.float32)[..., :3]
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
    distance = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
    labels, count = ndimage.label(distance > SPECK_DISTANCE, structure=np.ones((3, 3)))
    if count == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= SPECK_PIXELS).sum())


def drawn_specks(picture: np.ndarray, colour: str, background: str) -> int:
    """:func:`specks` against the two colours the picture shows (``classify_picture``), the caption's ``colour`` and
    ``background`` where it finds no shape: a speck is a blob of a third colour. A shape drawn in the wrong colour
    is a prompt-following error, which the colour figures count, not a speck."""
    drawn = classify_picture(picture)
    if drawn["colour"] is not None:
        colour, background = drawn["colour"], drawn["background"]
    return specks(picture, colour, background)


def canny(picture: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edge map (uint8 HxW, 0/255) of a uint8 picture, as the ControlNet stage uses it."""
    import cv2

    return cv2.Canny(np.ascontiguousarray(picture), low, high)


if __name__ == "__main__":  # a quick look: python training/data.py [out.png]
    import sys

    pics, caps, _ = batch(0, 0, 16)
    for c in caps:
        print(c)
    grid = (
        pics.reshape(4, 4, RESOLUTION, RESOLUTION, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(4 * RESOLUTION, 4 * RESOLUTION, 3)
    )
    Image.fromarray(grid).resize((512, 512), Image.NEAREST).save(
        sys.argv[1] if len(sys.argv) > 1 else "data_samples.png"
    )
    ok = sum(
        classify_picture(p)["shape"] == s.shape and classify_picture(p)["colour"] == s.colour
        for p, s in zip(*batch(1, 0, 200)[::2], strict=True)
    )
    print("classifier on ground truth:", ok, "/ 200")
