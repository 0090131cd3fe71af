"""Where the demo training writes: only the full run with its default checkpoints replaces the shipped model."""

from __future__ import annotations

from pathlib import Path

from training.train_demo import parse_args

ROOT = Path(__file__).resolve().parent.parent


def test_an_experiment_never_writes_the_shipped_model(tmp_path):
    assert Path(parse_args([]).out) == ROOT / "models" / "demo"
    assert Path(parse_args(["--checkpoint-dir", str(tmp_path)]).out) == tmp_path / "demo"
    assert Path(parse_args(["--quick"]).out).parent.name == "quick"
    assert Path(parse_args(["--checkpoint-dir", str(tmp_path), "--out", str(tmp_path / "x")]).out) == tmp_path / "x"
