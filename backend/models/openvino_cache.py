"""The disk cache of converted OpenVINO models (backend/models/openvino_unet.py).

An entry is ``<root>/<key>/model.xml`` (+ ``model.bin``) and OpenVINO's compiled blobs in
``<key>/compiled-<precision>``. The key hashes the weights' bytes (so a LoRA fused into them or another checkpoint is
another key), the module's class and config, the shape policy and the OpenVINO version; the conversion is always to
f32, so f32 and bf16 share it and only the compiled blobs are per precision. Only the ``keep`` most recently used
entries stay; the others, and entries left half-written by a crash, are deleted by ``prune``. auto's measurements
(backend/models/openvino_choice.py) are a file beside the entries.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SHAPE_POLICY = "dynamic-batch-height-width-v1"  # inputs' batch, height, width (and prompt length) are -1
KEEP = 4  # entries kept: a UNet and a VAE decoder for two models


def weights_hash(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer: name, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def entry_key(kind: str, module: torch.nn.Module) -> str:
    import openvino as ov

    config = getattr(module, "config", None)
    described = json.dumps(dict(config) if config is not None else {}, sort_keys=True, default=str)
    parts = [kind, type(module).__name__, described, SHAPE_POLICY, ov.get_version(), weights_hash(module)]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


@dataclass
class Compiled:
    model: Any  # openvino.CompiledModel
    from_cache: bool


class DiskCache:
    def __init__(self, root: Path, keep: int = KEEP):
        self.root = Path(root)
        self.keep = keep

    def has(self, key: str) -> bool:
        return (self.root / key / "model.xml").exists()

    def compiled(
        self, kind: str, module: torch.nn.Module, precision: str, convert: Callable[[], Any], key: str = ""
    ) -> Compiled:
        """The compiled model of ``module``: read from the cache, or converted (``convert()``) and saved.
        ``key``: its ``entry_key`` where the caller has it already (hashing SD 1.5's UNet takes seconds)."""
        import openvino as ov

        started = time.monotonic()
        entry = self.root / (key or entry_key(kind, module))
        xml = entry / "model.xml"
        from_cache = xml.exists()
        if from_cache:
            model = ov.Core().read_model(xml)
            os.utime(entry)  # most recently used: kept by prune
        else:
            model = convert()
            partial = entry.with_name(entry.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            ov.save_model(model, partial / "model.xml", compress_to_fp16=False)
            partial.rename(entry)  # whole entries only: a crash leaves a .partial that prune deletes
        options = {"INFERENCE_PRECISION_HINT": precision, "CACHE_DIR": str(entry / f"compiled-{precision}")}
        compiled = ov.Core().compile_model(model, "CPU", options)
        del model
        gc.collect()  # the converted graph's constants (GBs for SD 1.5) go before the next model converts
        how = "read from the cache" if from_cache else "converted"
        log.info("OpenVINO %s %s and compiled (%s) in %.1f s", kind, how, precision, time.monotonic() - started)
        return Compiled(compiled, from_cache)

    def entries(self) -> list[Path]:
        """Whole entries, most recently used first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.suffix != ".partial" and (p / "model.xml").exists()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def prune(self) -> list[Path]:
        """Delete all but the ``keep`` most recently used entries, and half-written ones; returns what went."""
        gone = self.entries()[self.keep :]
        if self.root.is_dir():
            gone += [p for p in self.root.iterdir() if p.is_dir() and p.name.endswith(".partial")]
        for path in gone:
            log.info("OpenVINO cache: deleting %s", path.name)
            shutil.rmtree(path, ignore_errors=True)
        return gone
