"""The audit log and the state folded from it, caught up on every read so every worker answers the same."""

from __future__ import annotations

import threading
from typing import Any

from agent.audit import AuditError, AuditLog, ChainBroken, ChainVerifier
from agent.state import State, fold


class Ledger:
    """Reads new records from where it stopped, verifies them, folds them; remembers a broken chain."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._state = State()
        self._offset = 0
        self._verifier = ChainVerifier(name=audit.path.name)
        self._broken: str | None = None
        self._lock = threading.Lock()

    def refresh(self) -> State:
        """Catch up with the file (other workers append to it) and return the state."""
        with self._lock:
            if self._broken is None:
                try:
                    while True:
                        records, self._offset = self.audit.read_from(self._offset, verifier=self._verifier, limit=100)
                        for record in records:
                            fold(self._state, record)
                        if not records:
                            break
                except ChainBroken as e:
                    self._broken = str(e)
                except AuditError as e:
                    self._broken = str(e)
            return self._state

    @property
    def broken(self) -> str | None:
        """Why the chain cannot be trusted, or None while it is intact."""
        return self._broken

    def append(self, event: str, *, deployment_id: str | None, actor: str, **fields: Any) -> dict[str, Any]:
        """Write one record (fsynced) before the action it announces; raises AuditError when it cannot."""
        if self._broken is not None:
            raise AuditError(f"the audit log is broken: {self._broken}")
        return self.audit.append(event, deployment_id=deployment_id, actor=actor, **fields)
