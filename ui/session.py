"""Per-session stop buttons: a user's Stop cancels that user's run, never anybody else's.

A run is registered when its Generate is clicked (``enqueue``), before it waits in the queue, so Stop also
cancels a run that has not started yet; ``start`` then picks up that same event.
"""

from __future__ import annotations

import threading


class CancelRegistry:
    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def enqueue(self, session: str) -> None:
        """Generate was clicked: a fresh, not yet cancelled event for this session's next run."""
        with self._lock:
            self._events[session] = threading.Event()

    def start(self, session: str) -> threading.Event:
        """The run begins: the event registered at click time (possibly already set), or a new one."""
        with self._lock:
            return self._events.setdefault(session, threading.Event())

    def cancel(self, session: str) -> bool:
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]
