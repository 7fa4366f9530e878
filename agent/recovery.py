"""A deployment whose worker died: found, and said so in the audit log; nothing is resumed or restarted."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from agent.auditlog import AuditError
from agent.errors import AuditBroken
from agent.ledger import Ledger
from agent.lock import DeployLock, take_lock, try_lock
from agent.logs import log

INTERRUPTED = "the agent stopped during this deployment; nothing was resumed or restarted"


def reconcile(ledger: Ledger, lock_path: Path) -> None:
    """A deployment with no final record while no worker holds the deploy lock: its worker died. Mark it."""
    if ledger.read(lambda s: s.running) is None or ledger.broken:
        return
    try:
        lock = try_lock(lock_path)
    except OSError as e:
        log("cannot take the deploy lock to reconcile", level=logging.WARNING, reason=str(e))
        return
    if lock is None:
        return  # a live worker is running it
    try:
        mark_interrupted(ledger)
    except AuditError as e:
        # A read must still answer (the log is full or read-only): the deployment stays running in the log,
        # and the next read tries again.
        log("interrupted deployment not recorded", level=logging.WARNING, reason=str(e))
    finally:
        lock.release()


def mark_interrupted(ledger: Ledger) -> None:
    """Called with the deploy lock held: the deployment still `running` in the log can only be a dead one."""
    running = ledger.read(lambda s: s.running)
    if running is not None:
        ledger.append("deployment_interrupted", deployment_id=running, actor="deploy-agent", message=INTERRUPTED)
        log("deployment interrupted", level=logging.WARNING, deployment_id=running)


def lock_for_change(ledger: Ledger, lock_path: Path, *, refused: str) -> DeployLock:
    """The deploy lock for a change (a deploy, a prune), held only once the whole chain, old records included, is
    verified and a dead worker's deployment is marked interrupted; Busy or AuditBroken (the lock released) else.

    `refused` starts the message of a broken chain: "deploys are refused", "a prune is refused".
    """
    lock = take_lock(lock_path)
    with released_on_failure(lock):
        ledger.verify_all()  # an in-place edit of an old record changes no size: only the whole chain shows it
        if ledger.broken:
            raise AuditBroken(f"{refused}: the audit log is broken: {ledger.broken}")
        mark_interrupted(ledger)
    return lock


@contextlib.contextmanager
def released_on_failure(lock: DeployLock) -> Iterator[None]:
    """Keep the lock if the block succeeds; release it if it fails, an AuditError told as AuditBroken."""
    try:
        yield
    except AuditError as e:
        lock.release()
        raise AuditBroken(f"cannot write the audit log, so nothing was done: {e}") from e
    except BaseException:
        lock.release()
        raise
