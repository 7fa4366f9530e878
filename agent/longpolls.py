"""Long polls hold at most half of a worker's request threads; the other half keep answering everything else."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent import gunicorn_conf


def slots_for(threads: int) -> int:
    """How many long polls a worker with `threads` request threads may hold at once: half of them, rounded down."""
    return max(threads, 0) // 2


class LongPolls:
    """A counter of the long polls waiting in this worker process (its threads share it)."""

    def __init__(self, threads: int = gunicorn_conf.threads) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self.slots = slots_for(threads)

    def resize(self, threads: int) -> None:
        """The worker's real thread count, once gunicorn has made the worker (`post_worker_init`)."""
        with self._lock:
            self.slots = slots_for(threads)

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """True while this request may wait; False when the slots are taken: it answers at once, as wait=0."""
        with self._lock:
            granted = self._waiting < self.slots
            self._waiting += granted
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self._waiting -= 1

    @property
    def waiting(self) -> int:
        return self._waiting


def size_for_worker(worker: Any) -> None:
    """gunicorn's post_worker_init hook: size the worker's long-poll slots from its `threads` setting."""
    services = getattr(worker.wsgi, "extensions", {}).get("deployplan")
    if services is not None:
        services.reads.long_polls.resize(worker.cfg.threads)
