"""The offline tiny model: SD 1.x structure, our own tokenizer, saved and loaded like a real model."""

from __future__ import annotations

import json

from diffusers import StableDiffusionPipeline

from backend.models import tiny


def test_tokenizer_knows_the_demo_words():
    tok = tiny.build_tokenizer()
    ids = tok("a red circle on a blue background").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 9  # one token per word
    assert tok.model_max_length == 77
    # Unknown words still tokenize (byte-level), never to <unk>.
    assert len(tok("zebra").input_ids) > 3


def test_saved_layout_loads_offline(cache_dir):
    path = cache_dir / "tiny"
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    assert pipe.vae.config.latent_channels == 4


def test_build_is_deterministic():
    a = tiny.build_components(seed=3)["unet"]
    b = tiny.build_components(seed=3)["unet"]
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_inpaint_variant_has_nine_channels(tmp_path):
    pipe = tiny.build_pipeline(inpaint=True)
    assert pipe.unet.config.in_channels == 9
