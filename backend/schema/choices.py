"""The request vocabulary: every fixed list of choices and hard bound a field has, in one place.

Pure data, so the schema, the validator, the UI and the A1111 conversion share it without importing any model code.
"""

from __future__ import annotations

MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED; -1 asks for a random one (backend.schema.seeds)
SIZE_MULTIPLE = 8  # widths and heights are multiples of this (the VAE's scale)
MAX_PROMPT_CHARS = 4000
MAX_HR_SCALE = 8  # hires fix: the second pass at most this many times the first pass's size, per side
NEGATIVE_MARK = "Negative prompt:"  # the infotext line that starts the negative prompt (backend.library.infotext)

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
INPAINT_AREAS = ("Whole picture", "Only masked")
OUTPAINT_FILLS = ("Blurred edge", "Noise")

CONTROL_TYPES = ("canny", "depth", "pose")
PREPROCESSORS = ("auto", "none")  # auto: the control type's own detector; none: the picture already is a map
MIN_DETECT_RESOLUTION = 64  # controlnet_aux rounds sizes to multiples of 64: below that a side becomes 0

# FLUX.1 dev's distilled guidance ("Distilled CFG"): its recommended value, the request field's default.
DISTILLED_CFG = 3.5
