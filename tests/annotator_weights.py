"""Random-weight depth and pose annotators, written in the file layout controlnet_aux reads.

The real files (lllyasviel/Annotators) come from the hub, which tests cannot reach. These have the same
architectures and key names, in half precision to keep them small (about 500 MB in all): the app loads
them from a local folder through its own code, exactly as it would load the real ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def _half(state: dict[str, torch.Tensor], strip_first: bool) -> dict[str, torch.Tensor]:
    # OpenPose's body/hand files name layers without the model's first attribute (controlnet_aux adds it back).
    return {(k.split(".", 1)[1] if strip_first else k): v.half() for k, v in state.items()}


def write_annotators(folder: Path, seed: int = 0) -> Path:
    with warnings.catch_warnings():  # controlnet_aux warns about its own internals
        warnings.simplefilter("ignore")
        return _write(folder, seed)


def _write(folder: Path, seed: int) -> Path:
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    files = {
        "body_pose_model.pth": (bodypose_model(), True),
        "hand_pose_model.pth": (handpose_model(), True),
        "facenet.pth": (FaceNet(), False),
        "dpt_hybrid-midas-501f0c75.pt": (DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True), False),
    }
    for name, (model, strip) in files.items():
        torch.save(_half(model.state_dict(), strip), folder / name)
    return folder
