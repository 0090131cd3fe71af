"""The text-encoder choice of a transformer-only FLUX file: by default the automatic pairing (the first fitting file
by name), else the files the ``text_encoders`` field names, swapped in the loaded model; misfits refused by field
name; the infotext carries the choice (only when there is one) and reads it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.models import dit_files, encoder_choice, tiny_dit
from backend.schema.errors import ValidationError
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings
from ui.common import TextEncoderDropdown, family_options, text_encoder_choices

from .conftest import pixels
from .dit_files import encoder_state, save_parts, save_transformer
from .ldm_layout import save_config_folder

MODEL = "flux-dev"
FIRST, SECOND = "t5xxl_fp16.safetensors", "t5xxl_other.safetensors"  # by name, FIRST is the automatic pairing's


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cache_dir) -> Engine:
    """A FLUX transformer alone, its CLIP-L, two fitting T5 files (different random weights), a T5 of another width
    and a CLIP-G (FLUX takes none)."""
    root = tmp_path_factory.mktemp("te-choice")
    pipe = DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / "tiny-flux", "flux"))
    save_config_folder(pipe, root / "configs" / "flux")
    save_transformer(pipe, "flux", root / "unet" / f"{MODEL}.safetensors")
    save_parts(pipe, "flux", root / "te", root / "vae", "ae")
    generator = torch.Generator().manual_seed(5)
    other = {k: (v + 0.5 * torch.randn(v.shape, generator=generator, dtype=v.dtype)) if v.is_floating_point() else v
             for k, v in encoder_state(pipe.text_encoder_2).items()}
    save_file({k: v.contiguous() for k, v in other.items()}, str(root / "te" / SECOND))
    width = pipe.text_encoder_2.config.d_model
    save_file({dit_files.T5_KEY: torch.zeros(width, width + 8)}, str(root / "te" / "t5xxl_wide.safetensors"))
    clip = {k: v.contiguous() for k, v in encoder_state(pipe.text_encoder).items()}
    save_file(clip, str(root / "te" / "clip_g_other.safetensors"))
    return Engine(Settings(offline=True, unet_dir=str(root / "unet"), text_encoder_dir=str(root / "te"),
                           vae_dir=str(root / "vae"), checkpoint_configs=root / "configs",
                           output_dir=root / "out", cache_dir=cache_dir))  # fmt: skip


def run(engine: Engine, text_encoders: str = "", **changes) -> tuple[np.ndarray, str]:
    request = Txt2ImgRequest(prompt="a red circle on a blue background", seed=7, steps=2, width=64, height=64,
                             sampler="Euler", model=MODEL, guidance_scale=1.0, text_encoders=text_encoders,
                             **changes)  # fmt: skip
    result = engine.run(request)
    return pixels(result.images[0]), result.infotext


def test_choosing_a_t5_file_swaps_it_and_the_first_is_the_automatic_pairing(engine):
    automatic, text = run(engine)
    assert "Text encoders" not in text  # the default pairing is not written
    chosen, _ = run(engine, SECOND)
    assert not np.array_equal(chosen, automatic)
    assert np.array_equal(run(engine, FIRST)[0], automatic)
    assert np.array_equal(run(engine, SECOND)[0], chosen)
    assert np.array_equal(run(engine)[0], automatic)  # back to the pairing
    loaded = engine.cache.peek(MODEL)
    # One T5 in memory: every pipeline of the model holds the same module.
    assert all(p.text_encoder_2 is loaded.base.text_encoder_2 for p in loaded.derived.values())


@pytest.mark.parametrize("name", ["t5xxl_wide.safetensors", "clip_g_other.safetensors", "missing.safetensors"])
def test_a_file_that_does_not_fit_is_refused_by_field_name(engine, name):
    with pytest.raises(ValidationError) as refused:
        run(engine, name)
    assert refused.value.field == "text_encoders"
    assert FIRST in str(refused.value) and SECOND in str(refused.value)  # what fits


def test_two_files_of_one_kind_are_refused(engine):
    with pytest.raises(ValidationError, match="two t5xxl"):
        run(engine, f"{FIRST}, {SECOND}")


def test_the_choice_round_trips_through_the_infotext(engine):
    chosen, text = run(engine, f"clip_l.safetensors, {SECOND}")
    assert "Text encoders: " in text
    fields = parse_infotext(text).request_fields()
    assert encoder_choice.names(fields["text_encoders"]) == ["clip_l.safetensors", SECOND]
    again, _ = run(engine, fields["text_encoders"])
    assert np.array_equal(again, chosen)


def test_the_candidates_are_the_folders_text_encoder_files(engine):
    spec = engine.registry.get(MODEL)
    fit = [p.path.name for p in encoder_choice.fitting(spec, encoder_choice.candidates(engine.settings))]
    assert fit == ["clip_l.safetensors", FIRST, SECOND]
    assert encoder_choice.automatic(spec, "t5xxl") == Path(dict(spec.parts)["t5xxl"])
    assert Path(dict(spec.parts)["t5xxl"]).name == FIRST


def test_the_menu_lists_the_files_shows_for_dit_files_only_and_holds_the_fields_text(engine):
    assert text_encoder_choices(engine) == [
        "clip_l.safetensors", "clip_g_other.safetensors", FIRST, SECOND, "t5xxl_wide.safetensors"]  # fmt: skip
    assert family_options(engine, MODEL)["text_encoders"]
    assert not family_options(engine, "Tiny FLUX (offline test model)")["text_encoders"]  # a folder model: its own
    menu = TextEncoderDropdown(text_encoder_choices(engine), value="", multiselect=True, allow_custom_value=True,
                               label="Text encoders")  # fmt: skip
    assert menu.preprocess([FIRST]) == FIRST and menu.preprocess([]) == ""
    assert menu.preprocess(f"clip_l.safetensors, {SECOND}") == f"clip_l.safetensors, {SECOND}"  # an API client's text
    assert menu.postprocess(f"clip_l.safetensors, {SECOND}") == ["clip_l.safetensors", SECOND]  # Send's infotext
