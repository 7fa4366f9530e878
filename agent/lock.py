"""The deploy lock: one deploy at a time across every gunicorn worker and thread (flock on a state-dir file)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DeployLock:
    """A held flock; released by `release()` or when its process dies (so a killed worker frees it)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def try_lock(path: Path) -> DeployLock | None:
    """Take the lock without waiting, or None if another deploy holds it. Each call opens its own file
    description, so two threads of one process exclude each other too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return DeployLock(fd)
