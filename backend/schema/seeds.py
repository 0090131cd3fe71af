"""Seeds: the one place where -1 becomes a random seed, and where a batch's seeds come from."""

from __future__ import annotations

import secrets

from backend.schema.choices import MAX_SEED

RANDOM = -1


def resolve_seed(seed: int, count: int = 1) -> int:
    """``seed``, or for -1 a random seed that leaves room for ``count`` consecutive seeds without wrapping."""
    if seed != RANDOM:
        return seed
    return secrets.randbelow(MAX_SEED + 2 - max(1, count))


def batch_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a batch: seed, seed+1, … wrapping at the largest seed."""
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]
