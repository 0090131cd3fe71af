"""The disk cache of converted OpenVINO models (backend/models/openvino_unet.py).

An entry is ``<root>/<key>/model.xml`` (+ ``model.bin``) and OpenVINO's compiled blobs in
``<key>/compiled-<precision>``. The key hashes the weights' bytes (so a LoRA fused into them or another checkpoint is
another key), the module's class and config, the shape policy and the OpenVINO version; the conversion is always to
f32, so f32 and bf16 share it and only the compiled blobs are per precision. Only the ``keep`` most recently used
entries stay; the others, and entries left half-written by a crash, are deleted by ``prune``. auto's measurements
(backend/models/openvino_choice.py) are a file beside the entries. ``Worker`` converts in the background (auto's
first start with a model), one conversion at a time.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
            converted = convert()
            partial = entry.with_name(entry.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            ov.save_model(converted, partial / "model.xml", compress_to_fp16=False)
            partial.rename(entry)  # whole entries only: a crash leaves a .partial that prune deletes
            del converted
            gc.collect()
            # Compiled from what a later start reads, so its compiled blob is the one a later start finds (the
            # converted graph in memory hashes otherwise: a second blob of the model's size per precision).
            model = ov.Core().read_model(xml)
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


class UNetGraph(torch.nn.Module):
    """The UNet call the converted graph covers: latents, timesteps (one per picture), text embeddings."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, hidden, return_dict=False)[0]


class DecoderGraph(torch.nn.Module):
    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def unet_example(unet: torch.nn.Module) -> tuple[tuple[torch.Tensor, ...], list[tuple[list[int], str]]]:
    """Example inputs for tracing and the dynamic input shapes (-1: batch, height, width, prompt length)."""
    channels, width = unet.config.in_channels, unet.config.cross_attention_dim
    side = 16 if unet.config.sample_size <= 32 else 32
    example = (torch.randn(2, channels, side, side), torch.full((2,), 500.0), torch.randn(2, 77, width))
    return example, [([-1, channels, -1, -1], "f32"), ([-1], "f32"), ([-1, -1, width], "f32")]


def decoder_example(vae: torch.nn.Module) -> tuple[tuple[torch.Tensor, ...], list[tuple[list[int], str]]]:
    channels = vae.config.latent_channels
    return (torch.randn(1, channels, 16, 16),), [([-1, channels, -1, -1], "f32")]


def convert(graph: torch.nn.Module, example: tuple[Any, ...], shapes: list[tuple[list[int], str]]) -> Any:
    """The OpenVINO model of ``graph`` (traced in fp32: a copy where it is in another dtype, so the torch module
    stays as it is; an fp32 module is traced as it is, saving a copy of its weights)."""
    import openvino as ov

    is_fp32 = all(param.dtype == torch.float32 for param in graph.parameters())
    traced = (graph if is_fp32 else copy.deepcopy(graph).to(torch.float32)).eval()
    inputs = [(ov.PartialShape(shape), ov.Type.f32) for shape, _ in shapes]
    with torch.no_grad():
        return ov.convert_model(traced, example_input=example, input=inputs)


def one_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@dataclass
class Job:
    """One background conversion: ``done`` is set when it ended, with ``result`` or ``error`` (one line)."""

    work: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str = ""


class Worker:
    """One daemon thread running conversions in the order given, one at a time: two at once would double the
    memory (SD 1.5: GBs each) and share the same cores. A daemon, so quitting the app never waits for it."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable[[], Any]) -> Job:
        job = Job(work)
        self._jobs.put(job)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="openvino-convert", daemon=True)
                self._thread.start()
        return job

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.work()
            except Exception as error:  # noqa: BLE001  (any failure means torch, said in one line)
                job.error = one_line(error)
                log.warning("OpenVINO background conversion failed: %s", job.error)
            finally:
                job.work = lambda: None  # drop the module copies it held
                job.done.set()
