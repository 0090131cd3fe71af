"""Load test: many clients at once against the real app (tiny model, offline), with a printed report.

    python bench/load.py [--clients 16] [--jobs 4] [--burst 64]

1. ``--clients`` clients, each making ``--jobs`` jobs one after another, all at once: every job must finish.
2. A burst of ``--burst`` jobs from distinct clients submitted together, beyond the queue's size: the ones the
   queue takes finish in the order they joined (FIFO); the rest are refused ("Queue is full", or the per-address
   bound, since every client here has the same address), none fails.
RSS before and after is printed: of this process, which holds the server and every client.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradio_client import Client  # noqa: E402

from backend import Engine, Settings  # noqa: E402

TINY = "Tiny (offline test model)"
JOB = dict(prompt="a red circle", steps=2, width=64, height=64, batch_size=1, model=TINY)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Report:
    done: int = 0
    refused: int = 0
    failed: list[str] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # burst job numbers in the order they finished
    lock: threading.Lock = field(default_factory=threading.Lock)


def sequential(client: Client, client_no: int, jobs: int, report: Report) -> None:
    for job in range(jobs):
        try:
            client.predict(**JOB, seed=client_no * 100 + job, api_name="/txt2img")
            with report.lock:
                report.done += 1
        except Exception as err:  # counted and printed: a load test reports, it does not stop
            with report.lock:
                report.failed.append(f"client {client_no} job {job}: {err}")


def burst(url: str, size: int, report: Report) -> None:
    clients = [Client(url, verbose=False) for _ in range(size)]
    jobs = []
    for number, client in enumerate(clients):
        job = client.submit(**JOB, seed=number, api_name="/txt2img")
        deadline = time.monotonic() + 10
        # The client joins the queue from its own thread: wait until it has, so the join order is known.
        while job.status().code.name == "STARTING" and time.monotonic() < deadline:
            time.sleep(0.005)
        jobs.append(job)
    pending = dict(enumerate(jobs))
    while pending:
        for number, job in list(pending.items()):
            if not job.done():
                continue
            del pending[number]
            try:
                job.result()
                report.done += 1
                report.finished.append(number)
            except Exception as err:
                # Gradio's full queue, or the per-address bound (all these clients share one address)
                if "queue is full" in str(err).lower() or "runs queued or running" in str(err):
                    report.refused += 1
                else:
                    report.failed.append(f"burst job {number}: {err}")
        time.sleep(0.05)


def run(clients: int, jobs: int, burst_size: int, output_dir: Path) -> tuple[Report, Report, float, float]:
    from tests.apphost import serve

    engine = Engine(Settings(offline=True, output_dir=output_dir, save_outputs=False))
    with serve(engine) as url:
        Client(url, verbose=False).predict(**JOB, seed=0, api_name="/txt2img")  # model loaded before measuring
        before = rss_mb()
        steady = Report()
        # Clients connect one by one (each fetches the page's config); then all of them generate at once.
        connected = [Client(url, verbose=False) for _ in range(clients)]
        threads = [threading.Thread(target=sequential, args=(c, n, jobs, steady)) for n, c in enumerate(connected)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        bursty = Report()
        burst(url, burst_size, bursty)
        after = rss_mb()
    return steady, bursty, before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--burst", type=int, default=64)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        steady, bursty, before, after = run(args.clients, args.jobs, args.burst, Path(out))
    print(
        f"{args.clients} clients x {args.jobs} jobs: {steady.done}/{args.clients * args.jobs} done, "
        f"{len(steady.failed)} failed"
    )
    in_order = bursty.finished == sorted(bursty.finished)
    print(
        f"burst of {args.burst}: {bursty.done} done, {bursty.refused} refused (queue full or bound), "
        f"{len(bursty.failed)} failed; finished in the order they joined: {in_order}"
    )
    print(
        f"RSS {before:.0f} MB before, {after:.0f} MB after ({after - before:+.0f} MB); "
        f"{time.monotonic() - started:.0f} s"
    )
    for line in steady.failed + bursty.failed:
        print("  failed:", line)


if __name__ == "__main__":
    main()
