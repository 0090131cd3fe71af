"""Stop buttons and fair shares: a Stop cancels the runs of its own tab, for its own caller, never anybody else's.

A run is registered when it starts; a run still waiting in the queue is dropped by Gradio's own ``cancels`` (tied
to the page's session and the tab's event). Runs are keyed by *owner* (login name, session and client address
together, so a stranger who learns a session hash cannot stop its runs) and *tab* (one page's txt2img Stop never
touches its queued img2img). ``check_share`` bounds how many runs one owner or one
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
    completed: bool = False  # its pictures were delivered
    ended_at: float = 0.0
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
    """The runs going now, each with its Stop event."""

    # Stop's own event and Gradio's cancel of the same run race: when the cancel ends the run first, Stop still
    # reports the step it ended at, if it ended this recently without finishing.
    RECENT = 10.0

    def __init__(self) -> None:
        self._runs: list[Run] = []
        self._last: dict[tuple[str, str], Run] = {}
        # When each job that has not started joined, and whether a Stop pressed before it joined stops it.
        self._waiting: dict[tuple[str, str], list[tuple[float, bool]]] = {}
        self._early: dict[tuple[str, str], float] = {}  # a Stop that found nothing yet: its own run's join is late
        self._lock = threading.Lock()

    def joined(self, owner: str, tab: str) -> None:
        """A job joined the queue (ui/queue_share.py). For Stop's message (a run that waits is dropped by Gradio's
        own cancel, and Stop then says it stopped it), and for a Stop that came before this join (see ``cancel``)."""
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)  # drops early Stops older than RECENT
            stopped = self._early.pop((owner, tab), None) is not None
            self._waiting.setdefault((owner, tab), []).append((now, stopped))

    def start(self, owner: str, tab: str, address: str = "") -> Run:
        with self._lock:
            waiting = self._waiting.get((owner, tab))
            _, stopped = waiting.pop(0) if waiting else (0.0, False)
            run = Run(owner, address, tab)
            if stopped:  # its Stop came before it joined the queue: it ends before its first step
                run.event.set()
            self._runs.append(run)
            return run

    def cancel(self, owner: str, tab: str) -> list[Run]:
        """Stop this owner's runs on this tab; returns them for the message (empty: nothing was going)."""
        now = time.monotonic()
        with self._lock:
            hit = [r for r in self._runs if r.owner == owner and r.tab == tab and not r.event.is_set()]
            last = self._last.get((owner, tab))
            # Joins older than an hour never started (their page went away): forgotten.
            waiting = [t for t, _ in self._waiting.pop((owner, tab), []) if now - t < 3600]
            if not hit and not waiting and (last is None or now - last.ended_at >= self.RECENT):
                # Stop is live only once Generate was pressed, so with nothing here its run has not joined the
                # queue yet (a busy server): the run that joins next stops at once. Not after a run that just
                # ended: that Stop was too late, not too early.
                self._early[(owner, tab)] = now
        for run in hit:
            run.event.set()
        if hit:
            return hit
        if last is not None and not last.completed and now - last.ended_at < self.RECENT:
            return [last]
        return [Run(owner, "", tab)] if waiting else []  # a waiting run: stopped before it started

    def finish(self, run: Run) -> None:
        with self._lock:
            self._runs = [r for r in self._runs if r is not run]
            run.ended_at = time.monotonic()
            self._forget_old(run.ended_at)
            self._last[(run.owner, run.tab)] = run

    def _forget_old(self, now: float) -> None:
        """Keeps a long-running server's bookkeeping to the pages of the last hour (callers hold the lock)."""
        self._last = {key: run for key, run in self._last.items() if now - run.ended_at < self.RECENT}
        self._early = {key: t for key, t in self._early.items() if now - t < self.RECENT}
        for key in list(self._waiting):
            self._waiting[key] = [(t, stopped) for t, stopped in self._waiting[key] if now - t < 3600]
            if not self._waiting[key]:
                del self._waiting[key]
