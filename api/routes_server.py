"""The server's own routes: rescan the model folders (``refresh-checkpoints``, ``refresh-vae``,
``refresh-embeddings``), free and reload the current model's weights (``unload-checkpoint``, ``reload-checkpoint``),
and describe the server (``cmd-flags``, ``memory``), in A1111's shapes."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from backend.generation.networks import embedding_dirs, lora_dirs
from backend.models.checkpoints import checkpoint_dirs, vae_dirs
from backend.models.loaders import ModelUnavailable
from backend.models.upscaler_files import upscaler_dirs

from .models import MemoryResponse
from .state import ERRORS, SD, ApiState, refusal


def add_refresh(router: APIRouter, state: ApiState) -> None:
    engine = state.engine

    @router.post(f"{SD}/refresh-checkpoints", tags=["sdapi"])
    def refresh_checkpoints() -> None:
        """Scan the checkpoint and VAE folders (and LoRAs, embeddings) again, as the page's Refresh does."""
        engine.refresh_models()

    @router.post(f"{SD}/refresh-vae", tags=["sdapi"])
    def refresh_vae() -> None:
        engine.refresh_models()  # one scan covers the VAE folders with the checkpoints

    @router.post(f"{SD}/refresh-embeddings", tags=["sdapi"])
    def refresh_embeddings() -> None:
        with engine.run_lock:
            engine.networks.refresh()


def add_checkpoint(router: APIRouter, state: ApiState) -> None:
    engine = state.engine

    @router.post(f"{SD}/unload-checkpoint", tags=["sdapi"])
    def unload_checkpoint() -> dict[str, Any]:
        """Free every loaded model's weights (after the running job, never under it); the next run loads again."""
        with engine.run_lock:
            for name in engine.cache.resident:
                engine.cache.unload(name)
        return {}

    @router.post(f"{SD}/reload-checkpoint", responses=ERRORS, tags=["sdapi"])
    def reload_checkpoint():
        """Load the current checkpoint (``options``' ``sd_model_checkpoint``) now, rather than at the next run."""
        try:
            with engine.run_lock:
                engine.cache.model(state.model)
        except ModelUnavailable as err:
            return refusal("sd_model_checkpoint", str(err))
        return {}


def add_server(router: APIRouter, state: ApiState) -> None:
    @router.get(f"{SD}/cmd-flags", tags=["sdapi"])
    def cmd_flags() -> dict[str, Any]:
        """The server's settings under A1111's command-line flag names, where one maps (no login is ever shown)."""
        return {**cmd_flags_of(state), **state.flags}

    @router.get(f"{SD}/memory", response_model=MemoryResponse, tags=["sdapi"])
    def memory():
        return MemoryResponse(ram=ram(), cuda=cuda())


def cmd_flags_of(state: ApiState) -> dict[str, Any]:
    settings = state.engine.settings
    joined = lambda dirs: os.pathsep.join(str(d) for d in dirs)  # noqa: E731
    return {
        "api": True,
        "api_auth": None,  # never the logins themselves
        "gradio_auth": None,
        "nowebui": False,
        "ckpt_dir": joined(checkpoint_dirs(settings)),
        "vae_dir": joined(vae_dirs(settings)),
        "lora_dir": joined(lora_dirs(settings)),
        "embeddings_dir": joined(embedding_dirs(settings)),
        "esrgan_models_path": joined(upscaler_dirs(settings)),
        "data_dir": str(settings.user_dir),
        "use_cpu": ["all"] if settings.device == "cpu" else [],
        "no_half": settings.dtype == "float32",
        "precision": "full" if settings.dtype == "float32" else "autocast",
        "lowvram": settings.cpu_offload,
        "xformers": settings.xformers,
        "opt_channelslast": settings.channels_last,
        "disable_safe_unpickle": settings.allow_pickle,
        "no_download_sd_model": settings.offline,
        "api_server_stop": False,
    }


def ram() -> dict[str, Any]:
    """A1111's ``ram``: this process's resident memory as ``used``, the machine's as ``total``, in bytes."""
    try:
        used = _proc_kib("/proc/self/status", "VmRSS") * 1024
        total = _proc_kib("/proc/meminfo", "MemTotal") * 1024
    except (OSError, ValueError, KeyError):
        try:
            import psutil  # not a requirement: only where /proc is missing

            used, total = psutil.Process().memory_info().rss, psutil.virtual_memory().total
        except Exception as err:  # noqa: BLE001 (A1111 reports any failure in the answer)
            return {"error": str(err) or type(err).__name__}
    return {"free": total - used, "used": used, "total": total}


def _proc_kib(path: str, key: str) -> int:
    with open(path, encoding="ascii") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    raise KeyError(key)


def cuda() -> dict[str, Any]:
    """A1111's ``cuda``: the device's and torch's memory, or ``{"error": "unavailable"}`` without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        pair = lambda key: {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}  # noqa: E731
        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as err:  # noqa: BLE001 (A1111 reports any failure in the answer)
        return {"error": str(err) or type(err).__name__}
