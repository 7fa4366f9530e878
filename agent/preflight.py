"""What `deploy-agent check` is made of: a result line, the context the checks share, and the small helpers they
use. The checks themselves are in `agent.checks`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import docker

from agent.config import Config
from agent.dockerio import DOCKER_ERRORS, connect

Status = Literal["ok", "warn", "FAIL"]
# Below this, a pull (Docker's filesystem) or the audit log (the state directory's) may run out of room.
LOW_SPACE = 1024**3
DOCKER_TIMEOUT = 10
# Login and key fetches go out to the Internet: give them longer than a local call.
NETWORK_TIMEOUT = 20


@dataclass(frozen=True)
class Line:
    """One result: what was checked, how it went, and why."""

    status: Status
    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.what}: {self.reason}"


@dataclass
class Context:
    """What the checks share: the environment, the configuration when it loads, one Docker client when reachable."""

    environ: Mapping[str, str]
    config: Config | None = None
    problems: list[str] = field(default_factory=list)
    connect: Callable[..., docker.APIClient] = connect
    _docker: docker.APIClient | None = None
    docker_error: str | None = None

    def docker(self) -> docker.APIClient | None:
        """The engine's client (None when it does not answer: `docker_error` says why); connected once."""
        if self._docker is None and self.docker_error is None:
            try:
                client = self.connect(timeout=DOCKER_TIMEOUT)
                client.ping()
                self._docker = client
            except DOCKER_ERRORS as e:
                self.docker_error = str(e) or type(e).__name__
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()


Check = Callable[[Context], Iterator[Line]]
NOT_CHECKED = "not checked: the variables above must be right first"


def free_space(what: str, path: Path) -> Line:
    try:
        free = shutil.disk_usage(path).free
    except OSError as e:
        return Line("warn", what, f"cannot tell the free space of {path}: {e.strerror}")
    shown = f"{free / 1024**3:.1f} GiB free at {path}"
    if free < LOW_SPACE:
        return Line("warn", what, f"only {shown}: under 1 GiB")
    return Line("ok", what, shown)


def existing_ancestor(path: Path) -> Path:
    """The path itself if it exists, else its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
