"""The demo DiT's training (training/train_dit_demo.py, training/dit_model.py): the compressed text sequence it trains
on computes what FluxPipeline's 512-token one does, and the quick run writes a folder FluxPipeline loads and draws
from (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import dit_model as dm

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = ["a small magenta cross on the right on a yellow background", "", "a red circle on a blue background"]


def t5_ids() -> torch.Tensor:
    tok = dm.t5_tokenizer()
    return tok(CAPTIONS, padding="max_length", max_length=dm.T5_LENGTH, truncation=True, return_tensors="pt").input_ids


def random_t5():
    torch.manual_seed(0)
    t5 = dm.new_t5()
    with torch.no_grad():
        dm.rel_bias(t5).weight.normal_(0, 1)  # far from the init's near-zero biases, so positions matter
    dm.tie_far_buckets(t5)
    return t5.eval()


def test_the_compressed_t5_sequence_equals_the_full_one():
    ids, t5 = t5_ids(), random_t5()
    with torch.no_grad():
        full = t5(ids).last_hidden_state
        compressed = dm.CompressedT5(t5)(ids)
    assert compressed.shape == (len(CAPTIONS), dm.COMPRESSED, dm.T5_WIDTH)
    assert torch.allclose(compressed, full[:, dm.positions()], atol=1e-4)
    deep = full[:, dm.T5_FRONT : dm.T5_LENGTH - dm.T5_BACK]
    assert torch.allclose(deep, deep[:, :1].expand_as(deep), atol=1e-4)  # the pads it stands for are identical
    assert not torch.allclose(full[0, 2], full[2, 2], atol=1e-3)  # and the captions still differ
    assert "compute_bias" not in vars(dm.CompressedT5(t5).attn)  # the model is left a plain T5


def test_the_transformer_on_the_compressed_sequence_equals_the_pipelines_call():
    torch.manual_seed(1)
    transformer = dm.new_transformer(64, 1, 1).eval()
    assert dm.check_compression(transformer, random_t5(), t5_ids()) < 1e-4


def test_untied_far_buckets_break_the_equivalence():
    """Why the far-left and far-right biases are tied: without it the deep pads differ by position."""
    t5 = random_t5()
    with torch.no_grad():
        dm.rel_bias(t5).weight[dm.FAR_BUCKETS[1]] += 1.0
        full = t5(t5_ids()).last_hidden_state
    deep = full[:, dm.T5_FRONT : dm.T5_LENGTH - dm.T5_BACK]
    assert not torch.allclose(deep, deep[:, :1].expand_as(deep), atol=1e-3)


@pytest.mark.slow
def test_quick_training_writes_a_flux_pipeline_folder(tmp_path):
    from diffusers import FluxPipeline

    ckpt = tmp_path / "ckpt"
    # one thread: two threads on a busy two-core machine crawl (measured: over 10 minutes for the base stage)
    cmd = [sys.executable, "training/train_dit_demo.py", "--quick", "--threads", "1", "--checkpoint-dir", str(ckpt)]
    cmd.append("--stage")
    for stage in ("latents", "base", "distill", "export"):
        subprocess.run([*cmd, stage], cwd=ROOT, check=True, timeout=900)
    out = ckpt / "demo_dit"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    assert json.loads((out / "training.json").read_text())["final"]
    pipe = FluxPipeline.from_pretrained(str(out), local_files_only=True, torch_dtype=torch.float32)
    assert pipe.transformer.config.guidance_embeds and pipe.vae.config.shift_factor == 0.0

    def draw(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return pipe(CAPTIONS[2], height=64, width=64, num_inference_steps=3, generator=generator, output_type="np")[
            "images"
        ][0]

    first = draw(0)
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, draw(0)) and not np.array_equal(first, draw(1))
