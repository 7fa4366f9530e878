"""The audit log and the state folded from it, caught up on every read so every worker answers the same."""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.auditlog import AuditError, AuditLog
from agent.logs import log
from agent.state import State, fold
from runner.core.chain import ChainBroken, ChainVerifier

T = TypeVar("T")
INDEX_EVERY = 1000
# How often a waiting reader looks for records appended by another worker process (appends in this process
# wake it at once).
WAIT_POLL = 0.02


class Ledger:
    """Reads new records from where it stopped, verifies them, folds them; remembers a broken chain."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._state = State()
        self._offset = 0
        self._verifier = ChainVerifier(name=audit.path.name)
        self._broken: str | None = None
        self._lock = threading.Lock()
        self._appended = threading.Condition()
        # A sparse index for /v1/audit: (first seq, byte offset) of a batch, one every INDEX_EVERY records or so.
        self._index: list[tuple[int, int]] = [(1, 0)]

    def read(self, view: Callable[[State], T]) -> T:
        """Catch up with the file (other workers append to it), then apply `view` to the state under the lock.

        Other threads fold new records into the same state: `view` must return values or copies, never a
        live part of it.
        """
        with self._lock:
            self._catch_up()
            return view(self._state)

    def wait(self, view: Callable[[State], T], done: Callable[[T], bool], *, timeout: float) -> T:
        """`view` of the state as soon as `done` holds for it (a deployment moved on), or when `timeout` ends.

        The audit log is the shared truth: a record appended by another worker is seen within WAIT_POLL.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.read(view)
            left = deadline - time.monotonic()
            if done(found) or left <= 0:
                return found
            with self._appended:
                self._appended.wait(min(WAIT_POLL, left))

    def repair(self) -> None:
        """At startup: set aside a torn last line (a crash mid-append), and say so in the log it was cut from."""
        try:
            torn = self.audit.repair_torn_tail()
        except AuditError as e:
            log("torn tail of the audit log not repaired", level=logging.ERROR, reason=str(e))
            return
        if torn is not None:
            kept, size = torn
            message = "a crash cut the last record short: its action never began; the bytes are kept beside the log"
            log("audit log torn tail set aside", level=logging.WARNING, file=str(kept), bytes=size)
            try:
                self.append(
                    "torn_tail_discarded",
                    deployment_id=None,
                    actor="deploy-agent",
                    file=kept.name,
                    bytes=size,
                    message=message,
                )
            except AuditError as e:
                log("torn tail not recorded", level=logging.ERROR, reason=str(e))

    def _catch_up(self) -> None:
        if self._broken is not None:
            return
        try:
            size = os.stat(self.audit.path).st_size
        except FileNotFoundError:
            size = 0
        if size == self._offset:
            return  # nothing new: the common case of every read, answered without opening the file
        if size < self._offset:
            self._broken = (
                f"{self.audit.path} is shorter than the {self._offset} bytes already read: records were removed"
            )
            return
        try:
            while True:
                start = self._offset
                records, self._offset = self.audit.read_from(start, verifier=self._verifier, limit=100)
                if records and records[0]["seq"] >= self._index[-1][0] + INDEX_EVERY:
                    self._index.append((records[0]["seq"], start))
                for record in records:
                    fold(self._state, record)
                if not records:
                    return
        except ChainBroken as e:
            self._broken = str(e)
        except AuditError as e:
            # A passing read error (EIO, EMFILE) is not a broken chain: the next read tries again.
            log("audit log not readable right now", level=logging.WARNING, reason=str(e))

    def offset_before(self, seq: int) -> int:
        """A byte offset at or before the record `seq` (0 when not known): where a reader of later records starts."""
        with self._lock:
            found = bisect.bisect_right(self._index, (seq, float("inf"))) - 1
            return self._index[max(found, 0)][1]

    def verify_all(self) -> None:
        """Check the whole chain on disk, old records included (an in-place edit changes no size); marks it broken."""
        try:
            verified = self.audit.verify()
        except ChainBroken as e:
            with self._lock:
                self._broken = str(e)
            return
        if verified.torn_bytes:
            self.repair()  # another worker died mid-append since this one started: repaired as at startup

    @property
    def broken(self) -> str | None:
        """Why the chain cannot be trusted, or None while it is intact."""
        return self._broken

    def append(self, event: str, *, deployment_id: str | None, actor: str, **fields: Any) -> dict[str, Any]:
        """Write one record (fsynced) before the action it announces; raises AuditError when it cannot."""
        if self._broken is not None:
            raise AuditError(f"the audit log is broken: {self._broken}")
        record = self.audit.append(event, deployment_id=deployment_id, actor=actor, **fields)
        with self._appended:
            self._appended.notify_all()
        return record
