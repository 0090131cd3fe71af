"""The API's jobs: admission into the shared bounded queue, FIFO order, progress, and per-owner stop.

One run at a time is the engine's own ``run_lock`` (the Gradio events take it too). The queue bound is shared:
API jobs waiting or running plus the Gradio queue's waiting events may not exceed ``Settings.queue_size``.
A job's owner is the caller's login when the server has one, else the task id it sent (``force_task_id``),
else its address; ``/interrupt`` and ``/skip`` reach only the caller's own jobs (never everyone's, as A1111's do).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.generation.engine import Engine
from backend.generation.interrupt import Cancelled
from backend.generation.pipeline_call import StepEvent
from backend.schema.requests import GenerationRequest, GenerationResult


class QueueFull(RuntimeError):
    """The shared queue is at its bound; the caller should retry later."""


@dataclass
class Job:
    owner: str
    task_id: str
    total_runs: int = 1
    runs_done: int = 0
    step: int = 0
    steps: int = 0
    preview: Any = None  # PIL image of the latest step
    started: float = 0.0  # 0 while waiting
    interrupt: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)

    def on_step(self, event: StepEvent) -> None:
        self.step, self.steps = event.step, event.total
        if event.preview is not None:
            self.preview = event.preview
        if self.skip.is_set() or self.interrupt.is_set():
            raise Cancelled("generation stopped")  # stops the pipeline at this step

    @property
    def progress(self) -> float:
        if not self.started or not self.steps:
            return 0.0
        return min(1.0, (self.runs_done + self.step / self.steps) / self.total_runs)


class Jobs:
    def __init__(self, engine: Engine, capacity: int, waiting_elsewhere: Callable[[], int] = lambda: 0):
        self.engine = engine
        self.capacity = capacity
        self.waiting_elsewhere = waiting_elsewhere  # the Gradio queue's waiting events
        self._jobs: deque[Job] = deque()  # API jobs, oldest (running) first
        self._cond = threading.Condition()

    def admit(self, owner: str, task_id: str | None, total_runs: int) -> Job:
        with self._cond:
            busy = len(self._jobs) + self.waiting_elsewhere()
            if busy >= self.capacity:
                raise QueueFull(
                    f"The queue is full ({busy} jobs waiting or running, the limit is {self.capacity}). "
                    "Try again in a minute."
                )
            job = Job(owner, task_id or f"task({uuid.uuid4().hex[:15]})", total_runs)
            self._jobs.append(job)
            return job

    def run(self, job: Job, requests: list[GenerationRequest]) -> tuple[list[GenerationResult], bool]:
        """Run the job's requests (A1111's n_iter) in turn once it is first in line; (results, interrupted)."""
        results: list[GenerationResult] = []
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs[0] is job or job.interrupt.is_set())
            job.started = time.monotonic()
            for request in requests:
                if job.interrupt.is_set():
                    break
                job.skip.clear()
                job.step = 0
                try:
                    results.append(self.engine.run(request, on_step=job.on_step, cancel=job.interrupt))
                except Cancelled:
                    if job.interrupt.is_set():
                        break  # skip: on to the next iteration
                job.runs_done += 1
            return results, job.interrupt.is_set()
        finally:
            with self._cond:
                self._jobs.remove(job)
                self._cond.notify_all()

    def _mine(self, owner: str | None, task_id: str | None) -> list[Job]:
        """Jobs with this task id (if the owner is given, only theirs), else all of the owner's."""
        if task_id:
            return [j for j in self._jobs if j.task_id == task_id and owner in (None, j.owner)]
        return [j for j in self._jobs if j.owner == owner]

    def stop(self, owner: str | None, task_id: str | None, skip: bool = False) -> int:
        """Interrupt (or skip the current picture of) the caller's own jobs; how many were reached."""
        with self._cond:
            mine = self._mine(owner, task_id)
            for job in mine:
                (job.skip if skip else job.interrupt).set()
            self._cond.notify_all()
            return len(mine)

    def progress(self, owner: str | None, task_id: str | None) -> tuple[Job | None, int]:
        """The caller's running (else oldest waiting) job, and how many jobs the server has in all."""
        with self._cond:
            mine = self._mine(owner, task_id)
            mine.sort(key=lambda j: not j.started)
            return (mine[0] if mine else None), len(self._jobs) + self.waiting_elsewhere()
