"""Shares of a worker's request threads for the requests that wait on something else: long polls hold at most
half of them, the registry lookups of dry runs at most a quarter, so at least a quarter always answers everything
else (/healthz, /v1/status, the page, the deploy itself), whoever sends what."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from agent import gunicorn_conf


class ThreadShare:
    """A counter of the requests of one kind waiting in this worker process (its threads share it); at most
    `threads // divisor` of them may wait at once."""

    divisor: ClassVar[int] = 1

    def __init__(self, threads: int = gunicorn_conf.threads) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self.threads = max(threads, 0)
        self.slots = self.slots_for(threads)

    @classmethod
    def slots_for(cls, threads: int) -> int:
        """How many may wait at once in a worker with `threads` request threads: its share, rounded down."""
        return max(threads, 0) // cls.divisor

    def resize(self, threads: int) -> None:
        """The worker's real thread count, once gunicorn has made the worker (`post_worker_init`)."""
        with self._lock:
            self.threads = max(threads, 0)
            self.slots = self.slots_for(threads)

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """True while this request may wait; False when the slots are taken: it answers at once instead."""
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


class LongPolls(ThreadShare):
    """Long polls (`?wait=`): half of the threads. One beyond that answers at once, as wait=0."""

    divisor = 2


class RegistryLookups(ThreadShare):
    """A dry run's question to the registry (through the engine, up to REGISTRY_TIMEOUT when the registry stalls):
    a quarter of the threads. A dry run beyond that answers at once, the registry not asked."""

    divisor = 4


def size_for_worker(worker: Any) -> None:
    """gunicorn's post_worker_init hook: size the worker's shares from its `threads` setting."""
    services = getattr(worker.wsgi, "extensions", {}).get("deployplan")
    if services is not None:
        services.reads.long_polls.resize(worker.cfg.threads)
        services.admission.registry_lookups.resize(worker.cfg.threads)
