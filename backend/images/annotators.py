"""ControlNet preprocessors (annotators): a reference picture → the control map a ControlNet reads.

The detectors are controlnet_aux's; this module names them, knows which weight files each reads, and
loads each once. Canny needs no weights. Depth (MiDaS DPT-Hybrid) and pose (OpenPose) read their weights
from ``settings.annotators``: the hub repository ``lllyasviel/Annotators`` by default, or a local folder
holding the same files.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from backend.images.ops import resize
from backend.models.devices import DevicePlan
from backend.models.loaders import ModelUnavailable
from backend.schema.choices import MIN_DETECT_RESOLUTION
from backend.settings import Settings

log = logging.getLogger(__name__)



class AnnotatorUnavailable(ModelUnavailable):
    """A detector's weights cannot be loaded; the message says which files and how to provide them."""


@dataclass(frozen=True)
class Detector:
    control_type: str
    cls_name: str  # the controlnet_aux class
    files: tuple[str, ...] = ()  # weight files it reads from the annotator folder or repository

    def load(self, source: str, offline: bool) -> Any:
        # controlnet_aux warns about its own internals (double model registration, deprecated timm names).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._load(source, offline)

    def _load(self, source: str, offline: bool) -> Any:
        import controlnet_aux  # slow to import (it pulls in every detector): only when a map is needed

        cls = getattr(controlnet_aux, self.cls_name)
        if not self.files:
            return cls()
        folder = Path(source).expanduser()
        if folder.is_dir():
            missing = [name for name in self.files if not (folder / name).is_file()]
            if missing:
                raise AnnotatorUnavailable(
                    f"the {self.control_type} preprocessor needs {', '.join(missing)} in the annotator folder "
                    f"{folder}; copy them there from the hub repository lllyasviel/Annotators"
                )
            return cls.from_pretrained(str(folder))
        try:
            return cls.from_pretrained(source, local_files_only=offline)
        except Exception as err:  # hub errors come in many classes (offline, missing file, network)
            where = "the local Hugging Face cache" if offline else f"the hub repository {source}"
            raise AnnotatorUnavailable(
                f"the {self.control_type} preprocessor needs {', '.join(self.files)}, which could not be loaded "
                f"from {where} ({type(err).__name__}). Download them from lllyasviel/Annotators into a folder "
                "and start with --annotators FOLDER (or SDSTUDIO_ANNOTATORS=FOLDER); or upload a ready "
                "control map with preprocessor 'none'."
            ) from err


DETECTORS: dict[str, Detector] = {
    "canny": Detector("canny", "CannyDetector"),
    "depth": Detector("depth", "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",)),
    "pose": Detector("pose", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")),
}


class MapOptions(Protocol):
    """What a detector is told besides the picture (a ``ControlUnit``; each detector reads its own options)."""

    low_threshold: int
    high_threshold: int
    detect_resolution: int  # the short side the detector works at; 0 = the output's short side
    pose_body: bool
    pose_hands: bool
    pose_face: bool


def detector_kwargs(control_type: str, options: MapOptions, resolution: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"detect_resolution": resolution, "image_resolution": resolution, "output_type": "pil"}
    if control_type == "canny":
        kwargs.update(low_threshold=options.low_threshold, high_threshold=options.high_threshold)
    elif control_type == "pose":
        kwargs.update(include_body=options.pose_body, include_hand=options.pose_hands, include_face=options.pose_face)
    return kwargs


class PreprocessError(ValueError):
    """A detector failed on a picture (the message says which detector)."""




def fit_map(detected: Image.Image, picture_size: tuple[int, int], size: tuple[int, int], mode: str) -> Image.Image:
    """A detector's map → the output size. controlnet_aux rounds both sides of its working size to multiples of 64,
    which stretches the picture; the map goes back to the picture's own shape first, so ``mode`` fits it exactly as
    it fits the picture and the map lines up with it."""
    unstretched = detected.convert("RGB").resize(picture_size, Image.Resampling.BILINEAR)
    return resize(unstretched, *size, mode, fill="black")


class Annotators:
    """Loads each detector once (like the pipeline cache does for models) and turns pictures into maps."""

    def __init__(self, settings: Settings, plan: DevicePlan):
        self.source = settings.annotators
        self.offline = settings.offline
        # With CPU offload the GPU is kept for the pipeline; the detectors run on the CPU.
        self.device = "cpu" if settings.cpu_offload else plan.device
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def detector(self, control_type: str) -> Any:
        with self._lock:
            if control_type not in self._loaded:
                log.info("loading the %s preprocessor", control_type)
                detector = DETECTORS[control_type].load(self.source, self.offline)
                if hasattr(detector, "to"):
                    detector = detector.to(self.device)
                self._loaded[control_type] = detector
            return self._loaded[control_type]

    def control_map(
        self, control_type: str, image: Image.Image, size: tuple[int, int], options: MapOptions, resize_mode: str
    ) -> Image.Image:
        """The control map of ``image`` for ``control_type``, at ``size`` (width, height)."""
        resolution = max(options.detect_resolution or min(size), MIN_DETECT_RESOLUTION)
        detector = self.detector(control_type)
        picture = image.convert("RGB")
        try:
            detected = detector(picture, **detector_kwargs(control_type, options, resolution))
        except Exception as err:  # OpenCV and torch errors from inside the detector: a message, not a crash
            raise PreprocessError(
                f"the {control_type} preprocessor failed on this picture ({type(err).__name__}: {err})"
            ) from err
        return fit_map(detected, picture.size, size, resize_mode)
