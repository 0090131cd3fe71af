"""Train the demo detector ``demo-shapes``: a tiny ultralytics YOLO that finds the shape in the demo model's pictures.

The pictures and their boxes come from ``training/data.py`` (every shape's size and centre are known), written as an
ultralytics dataset in a temporary folder; the network is a YOLOv8 layout at an eighth of the "n" width, trained on
the CPU at the pictures' own 64 pixels, and saved as a safetensors detector (``backend.models.detectors``) with the
size it was trained at. Run niced beside other work:

    nice -n 10 python training/train_detector.py            # writes models/adetailer/demo-shapes.safetensors
    nice -n 10 python training/train_detector.py --epochs 2 --train 200 --out some/where.safetensors   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import RESOLUTION, sample  # noqa: E402

from backend.models.detectors import save_detector  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "models" / "adetailer" / "demo-shapes.safetensors"
SEED = 2024  # another set than the demo model's training pictures
# YOLOv8's layout (two detection scales, strides 8 and 16) at depth 1/3 and width 1/8: about 0.3 M parameters.
NETWORK = {
    "nc": 1, "depth_multiple": 0.33, "width_multiple": 0.125, "max_channels": 256,
    "backbone": [
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C2f", [128, True]],
        [-1, 1, "Conv", [256, 3, 2]], [-1, 1, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
        [-1, 1, "C2f", [512, True]], [-1, 1, "SPPF", [512, 5]],
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 1, "C2f", [256]],
        [-1, 1, "Conv", [256, 3, 2]], [[-1, 7], 1, "Concat", [1]], [-1, 1, "C2f", [512]],
        [[10, 13], 1, "Detect", ["nc"]],
    ],
}


def write_split(root: Path, split: str, start: int, count: int) -> None:
    """Pictures ``start``… of the detector's set, with one YOLO label line each: class 0, centre and size / 64."""
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for index in range(start, start + count):
        picture, _, scene = sample(SEED, index)
        Image.fromarray(picture).save(root / "images" / split / f"{index}.png")
        x, y, side = scene.cx / RESOLUTION, scene.cy / RESOLUTION, scene.size / RESOLUTION
        (root / "labels" / split / f"{index}.txt").write_text(f"0 {x:.5f} {y:.5f} {side:.5f} {side:.5f}\n")


def train(args: argparse.Namespace) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # noqa: PLC0415 - heavy; only this script trains

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_split(root, "train", 0, args.train)
        write_split(root, "val", args.train, max(50, args.train // 10))
        (root / "data.yaml").write_text(json.dumps({"path": str(root), "train": "images/train",
                                                    "val": "images/val", "names": {0: "shape"}}))
        (root / "net.yaml").write_text(json.dumps(NETWORK))
        model = YOLO(str(root / "net.yaml"), task="detect")
        started = time.monotonic()
        model.train(data=str(root / "data.yaml"), epochs=args.epochs, imgsz=RESOLUTION, batch=32, workers=0,
                    device="cpu", plots=False, amp=False, project=str(root / "runs"), name="demo", seed=0,
                    deterministic=True, verbose=False, mosaic=0.5, fliplr=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
        trained = model.trainer.best if Path(model.trainer.best).is_file() else model.trainer.last
        best = YOLO(str(trained)).model.float()
        best.names = {0: "shape"}
        save_detector(best, args.out, image_size=RESOLUTION)
        print(f"trained {args.epochs} epochs on {args.train} pictures in {time.monotonic() - started:.0f} s; "
              f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=2000, help="training pictures (a tenth more for validation)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    np.random.seed(0)
    train(args)


if __name__ == "__main__":
    main()
