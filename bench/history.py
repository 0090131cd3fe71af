"""Benchmark: the History tab's index with many pictures: query times for words, model, day and the first page.

    python -m bench.history [--entries 100000] [--queries 200] [--owners 20]

Builds an index (``backend/library/history.py``) of synthetic entries in a temporary folder: prompts of 6 to 12
words from a 60-word vocabulary, 12 models, 365 days, ``--owners`` owners, each entry with an A1111 infotext as
the app writes it. No PNG is written (the index is what a search reads; the files are read only for the page
shown). Then, per kind of query, ``--queries`` searches with random values, each returning one page (24) and the
total count as the tab does; it prints the build time, the index's size and each kind's p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.library.history import INDEX_NAME, History, Page, Query, owner_digest  # noqa: E402

COLOURS = "red green blue yellow purple orange black white pink brown grey golden".split()
SHAPES = "circle square triangle star hexagon heart cross ring spiral diamond cube sphere".split()
PLACES = "forest city beach mountain desert ocean castle garden street river kitchen space".split()
STYLES = "photo painting sketch watercolor render portrait landscape closeup cinematic pixel anime studio".split()
WORDS = "on a with in the of background light dark bright misty sunny".split()
VOCABULARY = COLOURS + SHAPES + PLACES + STYLES
MODELS = [f"Model {n:02d}" for n in range(12)]
DAY0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def synthetic_rows(count: int, rng: random.Random) -> list[tuple]:
    """Index rows as ``backend.library.history.describe`` makes them, oldest first."""
    rows = []
    for n in range(count):
        words = rng.sample(VOCABULARY, rng.randint(4, 8)) + rng.sample(WORDS, 2)
        rng.shuffle(words)
        prompt, model = " ".join(words), rng.choice(MODELS)
        seconds = DAY0 + n * (365 * 86400 // count)
        day = time.strftime("%Y-%m-%d", time.gmtime(seconds))
        text = f"{prompt}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: {n}, Size: 512x512, Model: {model}"
        rows.append((f"{day}/{n:05d}-{n}.png", day, seconds * 10**9, day, model, prompt, text))
    return rows


def timed(search: Callable[[], Page], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        search()
        times.append((time.perf_counter() - began) * 1000)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--owners", type=int, default=20)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    owners = [owner_digest(f"login\x00user{n}") for n in range(args.owners)]
    with tempfile.TemporaryDirectory() as folder:
        history = History(Path(folder))
        rows = synthetic_rows(args.entries, rng)
        began = time.perf_counter()
        for owner in owners:  # each owner's share in one transaction
            history.insert(rows[owners.index(owner) :: len(owners)], owner)
        built = time.perf_counter() - began
        size = (Path(folder) / INDEX_NAME).stat().st_size + (Path(folder) / f"{INDEX_NAME}-wal").stat().st_size
        days = history.values("day", None)
        one = [owners[0]]
        kinds: dict[str, Callable[[], Page]] = {
            "first page, everyone's": lambda: history.search(None),
            "first page, one owner's": lambda: history.search([rng.choice(owners)]),
            "first page, owner + unowned": lambda: history.search([rng.choice(owners), ""]),
            "one word": lambda: history.search(None, Query(rng.choice(VOCABULARY))),
            "two words": lambda: history.search(None, Query(" ".join(rng.sample(VOCABULARY, 2)))),
            "one word, one owner's": lambda: history.search(one, Query(rng.choice(VOCABULARY))),
            "word prefix (3 letters)": lambda: history.search(None, Query(rng.choice(VOCABULARY)[:3])),
            "model": lambda: history.search(None, Query(model=rng.choice(MODELS))),
            "day": lambda: history.search(None, Query(day=rng.choice(days))),
            "word + model + day": lambda: history.search(
                None, Query(rng.choice(COLOURS), rng.choice(MODELS), rng.choice(days))
            ),
            "page 100, everyone's": lambda: history.search(None, Query(), page=100),
        }
        print(
            f"index of {args.entries:,} entries ({args.owners} owners): built in {built:.1f} s, "
            f"{size / 2**20:.1f} MiB; {args.queries} queries each, one page of 24 and the total count"
        )
        print(f"{'query':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, search in kinds.items():
            times = sorted(timed(search, args.queries))
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{name:<28} {statistics.median(times):>8.2f} {p95:>8.2f} {times[-1]:>8.2f}")
        history.close()


if __name__ == "__main__":
    main()
