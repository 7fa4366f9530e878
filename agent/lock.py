"""The deploy lock: one deploy at a time across every gunicorn worker and thread (flock on a state-dir file)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import AuditBroken, Busy


class DeployLock:
    """A held flock; released by `release()` or when its process dies (so a killed worker frees it)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def create_lock_file(path: Path) -> None:
    """Create the lock file once, at startup, so that taking the lock needs no write (works on a read-only fs)."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def try_lock(path: Path) -> DeployLock | None:
    """Take the lock without waiting, or None if another deploy holds it; OSError if the file cannot be opened.

    Each call opens its own file description, so two threads of one process exclude each other too.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return DeployLock(fd)


def take_lock(path: Path) -> DeployLock:
    """The deploy lock for a deploy or a prune: Busy when another holds it, AuditBroken when the state directory
    cannot be used (nothing is done either way)."""
    try:
        lock = try_lock(path)
    except OSError as e:
        raise AuditBroken(f"the state directory cannot be used, so nothing was done: {e}") from e
    if lock is None:
        raise Busy("another deploy or prune is in progress; wait for it")
    return lock
