"""Eta (A1111's "Eta for DDIM"): the field added after the house was rebuilt, end to end from its one declaration."""

from __future__ import annotations

import numpy as np

from backend.library.infotext import parse_infotext
from backend.schema.catalog import absent_defaults, common_fields, preset_fields
from backend.schema.requests import Txt2ImgRequest

from .conftest import pixels


def run(engine, **changes):
    request = Txt2ImgRequest(prompt="a red circle", seed=21, steps=4, guidance_scale=5.0, width=64, height=64,
                             model="Tiny (offline test model)", save=False, **changes)
    return engine.run(request)


def test_eta_changes_a_ddim_picture_and_its_infotext_reproduces_it(shared_engine):
    plain = run(shared_engine, sampler="DDIM", schedule="Automatic")
    noisy = run(shared_engine, sampler="DDIM", schedule="Automatic", eta=0.8)
    assert np.abs(pixels(plain.images[0]) - pixels(noisy.images[0])).max() > 0
    assert "Eta DDIM" not in parse_infotext(plain.infotext).params
    text = parse_infotext(noisy.infotext)
    assert text.params["Eta DDIM"] == "0.8"
    again = shared_engine.run(text.to_request(Txt2ImgRequest, save=False))  # the infotext alone: same pixels
    assert np.array_equal(pixels(again.images[0]), pixels(noisy.images[0]))


def test_samplers_without_eta_run_without_it_and_say_nothing(shared_engine):
    """As in A1111, eta does nothing to a sampler whose step takes none; the infotext then does not claim it."""
    plain = run(shared_engine, sampler="Euler a", schedule="Automatic")
    with_eta = run(shared_engine, sampler="Euler a", schedule="Automatic", eta=0.8)
    assert np.array_equal(pixels(plain.images[0]), pixels(with_eta.images[0]))
    assert "Eta DDIM" not in with_eta.infotext


def test_eta_takes_its_places_from_the_schema():
    assert "eta" in common_fields() and "eta" in preset_fields()
    assert absent_defaults()["eta"] == 0.0  # a picture without the key ran without eta
