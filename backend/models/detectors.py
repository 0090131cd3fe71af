"""Detectors for the detail pass (ADetailer): ultralytics YOLO files in the detector folders (``models/adetailer``).

A ``.safetensors`` detector always loads: it holds the weights and, in its metadata, the network's ultralytics yaml
and class names (``save_detector`` writes one; ``training/train_detector.py`` ships the demo's). A ``.pt`` file is
ultralytics' own format, a pickle, which can run code when it is opened: it loads only when the server's owner opts
in with ``SDSTUDIO_ALLOW_PICKLE=1``, as for checkpoints and upscalers. ultralytics itself is imported on first load,
so a server that never runs the detail pass does not pay for it. Detectors run on the CPU: they are small, and the
pipeline keeps the accelerator.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from backend.schema.errors import ValidationError
from backend.settings import PROJECT_ROOT, Settings

FIELD = "ad_model"
OFF = ("", "None")  # the extension's "None": no detail pass
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt",)
DEFAULT_DIR = "models/adetailer"
IMAGE_SIZE = 640  # the side pictures are letterboxed to, as ultralytics predicts by default
IOU = 0.7  # ultralytics' default overlap above which NMS keeps one box
METADATA_FORMAT = "sd-studio-yolo"

Box = tuple[int, int, int, int]  # left, top, right, bottom in the picture's pixels


def detector_dirs(settings: Settings) -> list[Path]:
    """``models/adetailer`` and ``SDSTUDIO_ADETAILER_DIRS`` (os.pathsep-separated); relative folders are the
    project's."""
    extra = settings.adetailer_dirs
    names = [DEFAULT_DIR, *(p.strip() for p in extra.split(os.pathsep) if p.strip())]
    paths = [Path(name).expanduser() for name in dict.fromkeys(names)]
    return [p if p.is_absolute() else PROJECT_ROOT / p for p in paths]


def detector_files(settings: Settings) -> dict[str, Path]:
    """Detector name (its file name, as ADetailer names models) → file; the first folder wins on a clash. Pickle
    files are listed only where the owner allows them."""
    suffixes = SAFE_SUFFIXES + (PICKLE_SUFFIXES if settings.allow_pickle else ())
    found: dict[str, Path] = {}
    for folder in detector_dirs(settings):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in suffixes:
                    found.setdefault(path.name, path)
    return found


def folders_text(settings: Settings) -> str:
    return ", ".join(str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(p)
                     for p in detector_dirs(settings))


@dataclass
class Detector:
    """A loaded YOLO detection network (ultralytics' ``DetectionModel``) in eval mode, and its class names."""

    name: str
    model: torch.nn.Module
    classes: dict[int, str] = field(default_factory=dict)
    image_size: int = IMAGE_SIZE  # the side pictures are letterboxed to: the size it was trained at

    @torch.no_grad()
    def detect(self, image: Image.Image, confidence: float) -> list[Box]:
        """The boxes found with at least ``confidence``, largest first, clipped to the picture."""
        nms, side = _ultralytics().nms, self.image_size
        scale = side / max(image.size)
        size = (round(image.size[0] * scale), round(image.size[1] * scale))
        # Letterboxed as ultralytics predicts: the long side to ``side``, the rest grey, the picture in the middle.
        canvas = np.full((side, side, 3), 114, dtype=np.uint8)
        left, top = (side - size[0]) // 2, (side - size[1]) // 2
        canvas[top : top + size[1], left : left + size[0]] = np.asarray(image.convert("RGB").resize(size))
        tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255
        preds = self.model(tensor)
        end2end = bool(getattr(self.model, "end2end", False))
        found = nms.non_max_suppression(preds, confidence, IOU, end2end=end2end)[0]
        boxes: list[Box] = []
        for x0, y0, x1, y1 in found[:, :4].tolist():
            box = ((x0 - left) / scale, (y0 - top) / scale, (x1 - left) / scale, (y1 - top) / scale)
            clipped = _clip(box, image.size)
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                boxes.append(clipped)
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def _clip(box: tuple[float, ...], size: tuple[int, int]) -> Box:
    x0, y0, x1, y1 = box
    return (max(0, int(x0)), max(0, int(y0)), min(size[0], int(round(x1))), min(size[1], int(round(y1))))


def _ultralytics() -> Any:
    """The ultralytics modules the detectors use, imported on first use (no settings file, no update check).

    Importing ultralytics replaces ``PIL.Image.open`` and ``torch.save`` process-wide; its ``Image.open`` answers a
    file that is not a picture by trying to pip-install ``pi-heif``, which turned the app's "this file is not a
    picture" message into a crash. Both are put back at once: the detectors need neither patch.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    image_open, torch_save = Image.open, torch.save
    try:
        import ultralytics.nn.tasks as tasks  # noqa: PLC0415 - third-party and heavy: only when a detector loads
        import ultralytics.utils.nms as nms  # noqa: PLC0415
    finally:
        Image.open, torch.save = image_open, torch_save
    return type("Ultralytics", (), {"tasks": tasks, "nms": nms})


def save_detector(model: torch.nn.Module, path: Path, image_size: int = IMAGE_SIZE) -> None:
    """Write an ultralytics ``DetectionModel`` as a safetensors detector: weights plus its yaml, class names and the
    picture size it works at."""
    names = {int(k): str(v) for k, v in dict(getattr(model, "names", {}) or {}).items()}
    metadata = {"format": METADATA_FORMAT, "yaml": json.dumps(model.yaml), "names": json.dumps(names),
                "image_size": str(image_size)}
    state = {key: value.detach().float().contiguous() for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_detector(path: Path, *, allow_pickle: bool) -> Detector:
    """A detector file, refused with a message naming the field when it is a pickle not allowed or unreadable."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ValidationError(
            FIELD, f"{path.name} is a pickle file; set SDSTUDIO_ALLOW_PICKLE=1 to load it, or use a .safetensors file"
        )
    try:
        if suffix in PICKLE_SUFFIXES:
            model, checkpoint = _ultralytics().tasks.load_checkpoint(str(path), device="cpu")
            side = (checkpoint.get("train_args") or {}).get("imgsz", IMAGE_SIZE)
        else:
            model, side = _from_safetensors(path)
    except ValidationError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise ValidationError(FIELD, f"{path.name} could not be read as an ultralytics YOLO detector: {err}") from None
    model = model.float().eval()
    classes = {int(k): str(v) for k, v in dict(getattr(model, "names", {}) or {}).items()}
    return Detector(path.name, model, classes, int(side) if isinstance(side, int | float) else IMAGE_SIZE)


def _from_safetensors(path: Path) -> tuple[torch.nn.Module, int]:
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != METADATA_FORMAT:
        raise ValueError("no detector metadata (a YOLO network's yaml and class names) in the file")
    names = {int(k): v for k, v in json.loads(metadata["names"]).items()}
    model = _ultralytics().tasks.DetectionModel(json.loads(metadata["yaml"]), nc=len(names) or None, verbose=False)
    model.load_state_dict(load_file(str(path)), strict=True)
    model.names = names
    return model, int(metadata.get("image_size", IMAGE_SIZE))


class Detectors:
    """The detector files by name, each loaded once (the last one used stays loaded)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loaded: Detector | None = None

    def names(self) -> list[str]:
        return list(detector_files(self.settings))

    def path(self, name: str) -> Path:
        """The file of detector ``name``, or a refusal naming the folders and the detectors found there."""
        files = detector_files(self.settings)
        if name in files:
            return files[name]
        stems = {path.stem: path for path in files.values()}
        if name in stems:
            return stems[name]
        for folder in detector_dirs(self.settings):
            for suffix in ("", *PICKLE_SUFFIXES):
                if (folder / f"{name}{suffix}").is_file() and (folder / f"{name}{suffix}").suffix in PICKLE_SUFFIXES:
                    load_detector(folder / f"{name}{suffix}", allow_pickle=self.settings.allow_pickle)  # refuses
        have = ", ".join(files) or "none"
        raise ValidationError(
            FIELD, f"no detector {name!r} in {folders_text(self.settings)}; put ultralytics YOLO files there "
            f"(.safetensors; .pt with SDSTUDIO_ALLOW_PICKLE=1). Found: {have}"
        )

    def get(self, name: str) -> Detector:
        path = self.path(name)
        if self._loaded is None or self._loaded.name != path.name:
            self._loaded = load_detector(path, allow_pickle=self.settings.allow_pickle)
        return self._loaded
