"""What Docker says right now: the environments' containers and an image's digest, read fresh for every request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests

from runner.core.facts import Observed

# Everything the SDK raises when the engine is gone or answers with an error.
DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)
# A fixed API version (Docker 20.10's): the SDK would otherwise ask the engine for its version on every new
# client, a round trip per status request. Newer engines serve older API versions.
API_VERSION = "1.41"
STATES = ("running", "exited", "created", "restarting", "paused", "dead")
Connect = Callable[..., docker.APIClient]
T = TypeVar("T")


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
    """Inspect the container by its server-owned name (its image's digest too, through `digests`; without them,
    no digest: a deploy's stop_remove needs none); raises DOCKER_ERRORS when Docker is unreachable."""
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
        digest=None
        if digests is None
        else digests.get(client, attrs["Image"], repository=image.rpartition(":")[0] if image else None),
        started_at=_time(state.get("StartedAt")),
        restart_count=int(attrs.get("RestartCount", 0)),
        labels=attrs["Config"].get("Labels") or {},
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


class FreshReads:
    """Concurrent callers share one Docker read, but only a read that started after they arrived.

    So every answer is Docker at the time of the request (never a cached one), and eight clients asking at once
    cost one or two round trips instead of eight: a caller that finds a read in flight waits for the next one,
    which every caller waiting then shares.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._started = self._done = 0
        self._outcome: tuple[bool, Any] = (False, None)

    def get(self, read: Callable[[], T]) -> T:
        with self._changed:
            needed = self._started + 1  # the first read to start after this caller arrived
            while self._done < needed:
                if self._started == self._done:  # none in flight: start the one every waiting caller needs
                    self._started += 1
                    mine = self._started
                    self._changed.release()
                    try:
                        outcome: tuple[bool, Any] = (True, read())
                    except BaseException as e:
                        outcome = (False, e)
                    finally:
                        self._changed.acquire()
                    self._outcome, self._done = outcome, mine
                    self._changed.notify_all()
                else:
                    self._changed.wait()
            ok, value = self._outcome
        if not ok:
            raise value
        result: T = value
        return result


class DockerAccess:
    """How the agent reaches Docker: a connect function (injected in tests), a kept client per request thread for
    the frequent reads, the digest cache, and shared fresh reads of the environments' containers."""

    STATUS_TIMEOUT = 5

    def __init__(self, connect: Connect = connect, *, reader: Callable[[], Any] | None = None) -> None:
        """`reader` makes the client of the frequent reads (inspect a container, an image); by default the
        `connect` client."""
        self.connect = connect
        self._make_reader = reader or (lambda: connect(timeout=self.STATUS_TIMEOUT))
        self.digests = DigestCache()
        self._local = threading.local()
        self._fresh: dict[tuple[tuple[str, str], ...], FreshReads] = {}
        self._fresh_lock = threading.Lock()

    def reader(self) -> Any:
        """This thread's kept reader: status is read often, and a new socket each time is slow."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make_reader()
        return client

    def drop_reader(self) -> None:
        """Forget this thread's client after an error: the next read connects anew."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            client.close()

    def observe_all(self, containers: dict[str, str]) -> tuple[dict[str, Observed], bool]:
        """Each environment's container by name, as Docker shows it now (a read started after this call), and
        whether Docker answered (else every state is 'unknown')."""
        key = tuple(sorted(containers.items()))
        with self._fresh_lock:
            fresh = self._fresh.setdefault(key, FreshReads())
        return fresh.get(lambda: self._observe(containers))

    def _observe(self, containers: dict[str, str]) -> tuple[dict[str, Observed], bool]:
        try:
            client = self.reader()
            return {env: observe(client, name, digests=self.digests) for env, name in containers.items()}, True
        except DOCKER_ERRORS:
            self.drop_reader()
            return {env: Observed.unknown(name) for env, name in containers.items()}, False

    def ping(self) -> None:
        """Raises DOCKER_ERRORS when the engine does not answer."""
        with self.connect(timeout=self.STATUS_TIMEOUT) as client:
            client.ping()


def _time(value: str | None) -> str | None:
    # Docker says 0001-01-01T00:00:00Z for "never".
    if not value or value.startswith("0001-"):
        return None
    return value
