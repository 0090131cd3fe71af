"""``--backend auto``: OpenVINO for a model only where it was measured faster than torch on this CPU.

A model's first start under auto converts its UNet and VAE decoder in the background (backend/models/openvino_unet.py
``convert_later``) while torch serves; the first request after the conversion is ready runs the UNet's first call on
both backends (at that request's shape), timed. The result is stored in ``<cache>/openvino/calibration.json``, keyed
by the CPU's model name and thread count, the converted model's key (the weights' hash) and the precision, so a
later start neither converts nor measures again. auto then runs OpenVINO only where it was at least ``MARGIN``
faster, torch otherwise, and says why in the log and on the page.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from backend.models import devices

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
MARGIN = 1.05  # OpenVINO must beat torch by 5%: closer than that is within one measurement's noise


def cpu_name(cpuinfo: Path | None = None) -> str:
    """The CPU's model name and torch's thread count: a measurement holds for this pair only."""
    try:
        text = (cpuinfo or devices.CPUINFO).read_text(errors="replace")
    except OSError:
        text = ""
    names = [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")]
    return f"{names[0] if names else 'unknown CPU'}, {torch.get_num_threads()} threads"


@dataclass
class Measurement:
    """One UNet call timed on both backends, at one shape."""

    torch_s: float
    openvino_s: float
    shape: str  # e.g. "batch 2 at 64×64 latents"
    date: str

    @property
    def ratio(self) -> float:
        return self.torch_s / self.openvino_s if self.openvino_s > 0 else 0.0

    @property
    def faster(self) -> bool:
        return self.ratio >= MARGIN

    def reason(self, precision: str) -> str:
        figures = (
            f"measured {self.openvino_s:.2f} s against {self.torch_s:.2f} s per UNet call, {self.shape}, {self.date}"
        )
        if self.faster:
            return f"OpenVINO {self.ratio:.1f}× faster than torch {precision} here ({figures}), so it runs the UNet"
        return f"torch: OpenVINO measured {self.ratio:.2f}× torch {precision} here ({figures}), so torch runs"


class Calibrations:
    """The measurements stored beside the converted models."""

    def __init__(self, root: Path):
        self.path = Path(root) / CALIBRATION_FILE

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def key(model_key: str, precision: str, cpu: str | None = None) -> str:
        return f"{cpu or cpu_name()} | {model_key} | {precision}"

    def get(self, key: str) -> Measurement | None:
        found = self._read().get(key)
        try:
            return Measurement(**found) if found else None
        except TypeError:  # written by another version
            return None

    def put(self, key: str, measured: Measurement) -> None:
        stored = self._read()
        stored[key] = asdict(measured)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(stored, indent=1, ensure_ascii=False))
        partial.replace(self.path)  # whole files only

    def summary(self, cpu: str | None = None) -> tuple[int, int]:
        """(measured, faster) models on this CPU."""
        prefix = f"{cpu or cpu_name()} | "
        found = [self.get(key) for key in self._read() if key.startswith(prefix)]
        measured = [m for m in found if m is not None]
        return len(measured), sum(m.faster for m in measured)


def time_both(run_torch: Callable[[], Any], run_openvino: Callable[[], Any], shape: str) -> tuple[Measurement, Any]:
    """Each backend once to warm up (OpenVINO's first call at a shape prepares its kernels), then once timed;
    returns the measurement and the outputs of both timed calls (torch's, OpenVINO's)."""
    run_openvino()
    run_torch()
    started = time.perf_counter()
    ov_out = run_openvino()
    openvino_s = time.perf_counter() - started
    started = time.perf_counter()
    torch_out = run_torch()
    torch_s = time.perf_counter() - started
    measured = Measurement(torch_s, openvino_s, shape, time.strftime("%Y-%m-%d"))
    return measured, (torch_out, ov_out)


def page_line(settings_backend: str, root: Path) -> str:
    """The start page's words for auto (which models run OpenVINO is decided per model as it loads)."""
    if settings_backend != "auto":
        return ""
    measured, faster = Calibrations(root).summary()
    stored = f"{measured} model(s) measured on this CPU, {faster} faster on OpenVINO" if measured else "none yet"
    return (
        f"auto: OpenVINO for a model where it was measured faster than torch on this CPU ({stored}), torch "
        "otherwise; a model's first start converts it in the background (torch until then) and measures it once"
    )
