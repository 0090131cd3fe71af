"""The demo model's training script, quick mode, end to end (slow: about a minute or two on a CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.generation.engine import Engine
from backend.models.registry import ModelRegistry
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .conftest import write_registry

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_training_writes_a_model_the_app_loads(tmp_path, cache_dir):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "training/train_demo.py",
        "--quick",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=1200)
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    registry_file = write_registry(tmp_path / "m.json", ["Quick demo"], source=str(out))
    engine = Engine(
        Settings(offline=True, cache_dir=cache_dir, output_dir=tmp_path / "o", default_model="Quick demo"),
        ModelRegistry.load(registry_file),
    )
    image = engine.run(
        Txt2ImgRequest(prompt="a red circle on a blue background", steps=4, width=64, height=64, seed=1)
    ).images[0]
    assert image.size == (64, 64)
