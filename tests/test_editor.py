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


def test_send_drops_values_our_dropdowns_cannot_hold():
    from ui.send import unusable

    assert unusable({"model": "v1-5-pruned-emaonly", "sampler": "DPM++ 2M", "schedule": "Karras"}, ["SD 1.5"]) == {
        "model": "v1-5-pruned-emaonly"
    }
    assert unusable({"sampler": "Restart", "schedule": "Automatic"}, []) == {
        "sampler": "Restart",
        "schedule": "Automatic",
    }
    assert unusable({"sampler": "DDIM", "schedule": "Karras"}, []) == {"schedule": "Karras"}
    assert unusable({"model": "SD 1.5", "sampler": "Euler", "schedule": "Karras"}, ["SD 1.5"]) == {}
    # A hires size (A1111's "Hires resize", the API's hr_resize_x/y): the txt2img tab has Hires upscale only.
    assert unusable({"enable_hr": True, "hr_resize_x": 1024, "hr_resize_y": 0}, []) == {"Hires resize": "1024x0"}
    assert unusable({"enable_hr": True, "hr_scale": 2.0}, []) == {}


def test_strokes_on_the_empty_canvas_are_not_a_picture():
    blank = Image.new("RGBA", (800, 800), (255, 255, 255, 255))
    value = {"background": blank, "layers": [stroke_layer((800, 800), (0, 0, 50, 50))], "composite": blank}
    assert split_editor_value(value) == (None, None)
    white_photo = Image.new("RGB", (640, 480), "white")
    assert split_editor_value({"background": white_photo, "layers": []})[0] is not None


def test_mask_brush_follows_the_model_picture_size():
    from ui.tab_inpaint import mask_brush

    # Gradio's size is the radius: SD 1.5's 512² pictures get a ~43 px stroke (1/12), small ones the 16 px floor.
    assert mask_brush(512).default_size == 21
    assert mask_brush(1024).default_size == 43
    assert mask_brush(64).default_size == 8
    assert mask_brush(512).colors == [("#FFFFFF", 0.5)]  # half-transparent white: the picture shows through
