"""Stop buttons and fair shares: a Stop cancels the runs of its own tab, for its own caller, never anybody else's.

A run is registered when its Generate is clicked (``enqueue``), before it waits in the queue, so Stop also reaches
a run that has not started yet; ``start`` then picks up that same event. Runs are keyed by *owner* (login name,
session and client address together, so a stranger who learns a session hash cannot stop its runs) and *tab*
(one page's txt2img Stop never touches its queued img2img). ``check_share`` bounds how many runs one owner or one
address may have queued or running at once, so one client cannot fill the shared queue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class TooManyJobs(Exception):
    """The caller already has the allowed number of runs queued or running."""


@dataclass
class Run:
    owner: str
    address: str
    tab: str
    event: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    clicked_at: float = field(default_factory=time.monotonic)
    step: int = 0  # last step reported, for "stopped at step k/n"
    total: int = 0


def check_share(jobs: list[tuple[str, str]], owner: str, address: str, limit: int, address_factor: int = 4) -> None:
    """Refuse a new run (``TooManyJobs``) when ``owner`` already has ``limit`` jobs queued or running, or its address
    (a household or classroom behind one router) ``limit × address_factor``. ``jobs``: (owner, address) of every
    job in the queue or running, as the queue itself sees them (so a job dropped from the queue stops counting)."""
    if limit <= 0:
        return
    mine = sum(o == owner for o, _ in jobs)
    if mine >= limit:
        raise TooManyJobs(
            f"You already have {mine} runs queued or running (the limit is {limit} per person); "
            "wait for one to finish or press Stop."
        )
    same_address = sum(bool(address) and a == address for _, a in jobs)
    if same_address >= limit * address_factor:
        raise TooManyJobs(
            f"Your network address already has {same_address} runs queued or running (the limit is "
            f"{limit * address_factor}); wait for one to finish."
        )


def owner_key(username: str | None, session: str | None, address: str | None) -> str:
    return f"{username or ''}\x00{session or ''}\x00{address or ''}"


class CancelRegistry:
    """``stale_after``: seconds after which a run clicked but never started (its job was dropped from the queue,
    or the page went away) is forgotten."""

    def __init__(self, stale_after: float = 1800.0) -> None:
        self.stale_after = stale_after
        self._runs: list[Run] = []
        self._lock = threading.Lock()

    def _prune(self) -> None:
        now = time.monotonic()
        self._runs = [r for r in self._runs if r.started or now - r.clicked_at < self.stale_after]

    def enqueue(self, owner: str, tab: str, address: str = "") -> Run:
        """Generate was clicked: a fresh, not yet cancelled run."""
        with self._lock:
            self._prune()
            run = Run(owner, address, tab)
            self._runs.append(run)
            return run

    def start(self, owner: str, tab: str, address: str = "") -> Run:
        """The run begins: the oldest run clicked on this tab by this owner (possibly already stopped), or a new
        one (an API call has no click)."""
        with self._lock:
            for run in self._runs:
                if run.owner == owner and run.tab == tab and not run.started:
                    run.started = True
                    return run
            run = Run(owner, address, tab, started=True)
            self._runs.append(run)
            return run

    def cancel(self, owner: str, tab: str) -> list[Run]:
        """Stop every run of this owner on this tab; returns them (running first) for the message."""
        with self._lock:
            # Runs not yet started stay registered (set), so when their turn comes ``start`` finds them stopped.
            hit = [r for r in self._runs if r.owner == owner and r.tab == tab and not r.event.is_set()]
        for run in hit:
            run.event.set()
        return sorted(hit, key=lambda r: not r.started)

    def finish(self, run: Run) -> None:
        with self._lock:
            self._runs = [r for r in self._runs if r is not run]
