"""Refusals bounded in total: an identity refused more than 30 times in the last minute is answered 429 on writes.

The count lives in DEPLOY_AGENT_STATE_DIR (`refusals.json`, rewritten whole under an flock on `refusals.lock`), so
every gunicorn worker sees the same one. The 429 answers are not audited one by one: each identity's are counted
per calendar minute, and one `refusals_suppressed` record per identity and minute is written once that minute has
passed (by a timer in the worker that answered, else by the next refusal or start of any worker).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.auditlog import AuditError
from agent.ledger import Ledger
from agent.logs import log

LIMIT, WINDOW = 30, 60.0
STATE_FILE, LOCK_FILE = "refusals.json", "refusals.lock"
# Methods that only read: never answered 429, whatever the identity did.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class RefusalLimit:
    """The refusals of each identity in the last WINDOW seconds, shared by every worker through the state dir."""

    def __init__(self, state_dir: Path, ledger: Ledger, *, clock: Callable[[], float] = time.time) -> None:
        self.path, self.lock_path = state_dir / STATE_FILE, state_dir / LOCK_FILE
        self.ledger = ledger
        self.clock = clock
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()

    def retry_after(self, actor: str) -> int | None:
        """Seconds until `actor` may write again, or None when it may now (more than LIMIT refusals in WINDOW)."""
        now = self.clock()
        recent: list[float] = sorted(t for t in _read(self.path).get("times", {}).get(actor, []) if t > now - WINDOW)
        if len(recent) <= LIMIT:
            return None
        return max(1, math.ceil(recent[-LIMIT - 1] + WINDOW - now))

    def refused(self, actor: str) -> None:
        """Count one refused request of `actor` (any answer 400-499 to an authenticated caller)."""
        self._update(actor, suppressed=False)

    def suppressed(self, actor: str) -> None:
        """Count one 429 of `actor`: a refusal too (an identity that keeps trying stays limited), not audited."""
        self._update(actor, suppressed=True)
        self._flush_later()

    def flush(self) -> None:
        """Write one `refusals_suppressed` record per identity and past minute; the count is forgotten once written."""
        try:
            with self._locked() as data:
                self._flush(data, self.clock())
        except OSError as e:
            log("refusal counts not readable", level=logging.WARNING, reason=str(e))

    def _update(self, actor: str, *, suppressed: bool) -> None:
        now = self.clock()
        try:
            with self._locked() as data:
                times = data.setdefault("times", {})
                recent = [t for t in times.get(actor, []) if t > now - WINDOW] + [now]
                times[actor] = recent[-(LIMIT + 1) :]  # enough to know when the limit ends
                for name in [a for a, found in times.items() if all(t <= now - WINDOW for t in found)]:
                    del times[name]
                if suppressed:
                    minute = _minute(now)
                    counts = data.setdefault("suppressed", {}).setdefault(actor, {})
                    counts[minute] = counts.get(minute, 0) + 1
                self._flush(data, now)
        except OSError as e:
            # The limit must never stop the answer: a state dir that cannot be written refuses deploys anyway.
            log("refusal not counted", level=logging.WARNING, reason=str(e))

    def _flush(self, data: dict[str, Any], now: float) -> None:
        current = _minute(now)
        for actor, counts in list(data.get("suppressed", {}).items()):
            for minute in sorted(m for m in counts if m < current):
                try:
                    self.ledger.append(
                        "refusals_suppressed",
                        deployment_id=None,
                        actor=actor,
                        minute=minute,
                        suppressed=counts[minute],
                        message=f"{counts[minute]} request(s) answered 429 too_many_requests, not audited one by one",
                    )
                except AuditError as e:
                    log("suppressed refusals not audited", level=logging.WARNING, actor=actor, reason=str(e))
                    return  # kept: written by a later flush
                del counts[minute]
            if not counts:
                del data["suppressed"][actor]

    def _flush_later(self) -> None:
        """A timer in this worker writes the minute's record soon after the minute ends, with no request needed."""
        with self._timer_lock:
            if self._timer is not None and self._timer.is_alive():
                return
            wait = WINDOW - self.clock() % WINDOW + 1
            self._timer = threading.Timer(wait, self.flush)
            self._timer.daemon = True
            self._timer.start()

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The counts under an exclusive flock (threads and workers alike), written back whole when the block ends."""
        fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = _read(self.path)
            yield data
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
            os.replace(temporary, self.path)
        finally:
            os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log("refusal counts unreadable: starting again from none", level=logging.WARNING, reason=str(e))
        return {}
    return data if isinstance(data, dict) else {}


def _minute(now: float) -> str:
    """The calendar minute of `now`, UTC: `2026-12-02T22:45Z` (text order is time order)."""
    return datetime.fromtimestamp(now - now % 60, UTC).strftime("%Y-%m-%dT%H:%MZ")
