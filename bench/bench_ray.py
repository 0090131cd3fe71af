"""Benchmark: generation on Ray Serve replicas against the in-process engine (demo model by default).

    python bench/bench_ray.py [--model NAME] [--steps 10] [--size 64] [--jobs 8] [--rounds 3]

One local Ray instance holds two Serve applications side by side, one with 1 engine replica and one with 2 (CPU
replicas, one core each). Each round runs, in turn: ``--jobs`` jobs on the in-process engine (one after another, as
the app runs them), the same jobs on the 1-replica and the 2-replica applications (as many at once as there are
replicas), and a 1-step job on each to time the per-request cost of the Ray hop. It prints medians over the rounds:
throughput in images/min with its ratio to in-process, and the per-request latency with the Ray hop's overhead.
Offline; nothing is saved.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from backend import Engine, Settings, Txt2ImgRequest  # noqa: E402
from backend.serving import remote  # noqa: E402


def timed_jobs(engine: Engine, requests: list[Txt2ImgRequest], parallel: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(engine.run, requests))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Demo shapes (offline)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    out = tempfile.mkdtemp(prefix="bench-ray-")
    base = Settings.from_env(offline=True, output_dir=out, save_outputs=False, workers="ray", ray_gpus_per_replica=0)
    size = {"width": args.size, "height": args.size}
    jobs = [
        Txt2ImgRequest(prompt="a red circle", seed=i, steps=args.steps, model=args.model, **size)
        for i in range(args.jobs)
    ]
    probe = Txt2ImgRequest(prompt="a red circle", seed=0, steps=1, model=args.model, **size)

    # Three CPU replicas reserve one logical core each; only the application being timed is busy at a time.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    engines = {
        "in-process": Engine(base),
        "ray, 1 replica": remote.connect(dataclasses.replace(base, ray_replicas=1), name="bench-1"),
        "ray, 2 replicas": remote.connect(dataclasses.replace(base, ray_replicas=2), name="bench-2"),
    }
    for engine in engines.values():  # warm up: models loaded on every replica
        timed_jobs(engine, jobs[:2], engine.concurrency)

    throughput: dict[str, list[float]] = {name: [] for name in engines}
    latency: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            seconds = timed_jobs(engine, jobs, engine.concurrency)
            throughput[name].append(len(jobs) / seconds * 60)
            start = time.perf_counter()
            engine.run(probe)
            latency[name].append(time.perf_counter() - start)
    remote.shutdown()

    print(f"{args.model}, {args.size}x{args.size}, {args.steps} steps, {args.jobs} jobs, {args.rounds} rounds, medians")
    base_ipm = statistics.median(throughput["in-process"])
    base_lat = statistics.median(latency["in-process"])
    print(f"{'':18} {'images/min':>10} {'vs in-process':>14} {'1-step job s':>13} {'Ray hop s':>10}")
    for name in engines:
        ipm, lat = statistics.median(throughput[name]), statistics.median(latency[name])
        print(f"{name:18} {ipm:10.1f} {ipm / base_ipm:13.2f}x {lat:13.3f} {lat - base_lat:10.3f}")


if __name__ == "__main__":
    main()
