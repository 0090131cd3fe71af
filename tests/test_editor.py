"""The image editor's value (background / layers / composite) → image and mask."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ui.editor import split_editor_value


def stroke_layer(size, box):
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), box)
    return layer


def test_layers_union_and_background():
    bg = Image.new("RGBA", (40, 30), (10, 20, 30, 255))
    value = {
        "background": bg,
        "layers": [stroke_layer((40, 30), (0, 0, 5, 5)), stroke_layer((40, 30), (30, 20, 40, 30))],
        "composite": bg,
    }
    image, mask = split_editor_value(value)
    m = np.asarray(mask)
    assert image.mode == "RGB" and image.size == (40, 30)
    assert m[2, 2] == 255 and m[25, 35] == 255 and m[15, 20] == 0


def test_empty_layers_give_no_mask():
    bg = Image.new("RGB", (40, 30))
    assert split_editor_value({"background": bg, "layers": [], "composite": bg})[1] is None
    empty = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert split_editor_value({"background": bg, "layers": [empty], "composite": bg})[1] is None


def test_layer_at_another_size_is_aligned():
    bg = Image.new("RGB", (80, 60))
    _, mask = split_editor_value({"background": bg, "layers": [stroke_layer((40, 30), (20, 15, 40, 30))]})
    m = np.asarray(mask)
    assert mask.size == (80, 60) and m[50, 70] == 255 and m[10, 10] == 0


def test_uploaded_mask_wins_and_missing_background():
    bg = Image.new("RGB", (40, 30))
    uploaded = Image.new("L", (40, 30), 255)
    value = {"background": bg, "layers": [stroke_layer((40, 30), (0, 0, 5, 5))]}
    assert split_editor_value(value, uploaded)[1] is uploaded
    assert split_editor_value({"background": None, "layers": [], "composite": None}) == (None, None)
    assert split_editor_value(None) == (None, None)
