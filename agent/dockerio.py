"""What Docker says right now: one environment's container, an image's digest, a container's last log lines."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.utils
import requests

# Everything the SDK raises when the engine is gone or answers with an error.
DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


@dataclass(frozen=True)
class Observed:
    """An environment's container as Docker reports it ('absent' when there is none)."""

    name: str
    id: str | None
    state: str
    image: str | None
    digest: str | None
    started_at: str | None
    restart_count: int

    @classmethod
    def absent(cls, name: str) -> Observed:
        return cls(name=name, id=None, state="absent", image=None, digest=None, started_at=None, restart_count=0)

    @classmethod
    def unknown(cls, name: str) -> Observed:
        return cls(name=name, id=None, state="unknown", image=None, digest=None, started_at=None, restart_count=0)


# A fixed API version (Docker 20.10's): the SDK would otherwise ask the engine for its version on every new
# client, a round trip per status request. Newer engines serve older API versions.
API_VERSION = "1.41"
STATES = ("running", "exited", "created", "restarting", "paused", "dead")


def connect(*, timeout: int) -> docker.APIClient:
    """A client found the standard way (DOCKER_HOST, else the local socket), as `docker.from_env()` does."""
    return docker.APIClient(timeout=timeout, version=API_VERSION, **docker.utils.kwargs_from_env())


class DigestCache:
    """Registry digests by (image id, repository): an image id is a content hash, so a found digest never changes."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None], str] = {}
        self._lock = threading.Lock()

    def get(self, client: docker.APIClient, image_id: str, *, repository: str | None) -> str | None:
        with self._lock:
            if (image_id, repository) in self._found:
                return self._found[(image_id, repository)]
        digest = image_digest(client, image_id, repository=repository)
        if digest is not None:
            with self._lock:
                self._found[(image_id, repository)] = digest
        return digest


def observe(client: docker.APIClient, name: str, *, digests: DigestCache | None = None) -> Observed:
    """Inspect the container by its server-owned name; raises DOCKER_ERRORS when Docker is unreachable."""
    try:
        attrs: dict[str, Any] = client.inspect_container(name)
    except docker.errors.NotFound:
        return Observed.absent(name)
    state = attrs["State"]
    image = attrs["Config"].get("Image")
    return Observed(
        name=name,
        id=attrs["Id"],
        # Docker's transient "removing" is not a state the API promises: it is reported as unknown.
        state=state.get("Status") if state.get("Status") in STATES else "unknown",
        image=image,
        digest=(digests or DigestCache()).get(
            client, attrs["Image"], repository=image.rpartition(":")[0] if image else None
        ),
        started_at=_time(state.get("StartedAt")),
        restart_count=int(attrs.get("RestartCount", 0)),
    )


def image_digest(client: docker.APIClient, image: str, *, repository: str | None) -> str | None:
    """The registry digest (`sha256:...`) of a local image for that repository, if Docker knows one."""
    try:
        digests = client.inspect_image(image).get("RepoDigests") or []
    except docker.errors.NotFound:
        return None
    for entry in digests:
        name, _, digest = entry.partition("@")
        if repository is None or name == repository:
            return str(digest)
    return None


def last_log_lines(client: docker.APIClient, container_id: str, *, lines: int = 100) -> list[str]:
    """The container's last output lines (stdout and stderr), decoded leniently."""
    raw: bytes = client.logs(container_id, stdout=True, stderr=True, tail=lines)
    return raw.decode("utf-8", errors="replace").splitlines()


def _time(value: str | None) -> str | None:
    # Docker says 0001-01-01T00:00:00Z for "never".
    if not value or value.startswith("0001-"):
        return None
    return value
