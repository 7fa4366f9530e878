"""What Docker says right now: one environment's container, an image's digest, a container's recent output."""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import docker
import docker.auth
import docker.errors
import docker.utils
import requests

from runner.core.facts import Observed
from runner.core.secrets import Masker
from runner.core.text import clip_line

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


@dataclass
class LogLine:
    time: str | None
    stream: Literal["stdout", "stderr"]
    text: str


@dataclass
class LogTail:
    """A container's recent output, masked and bounded; `truncated` when a line or older lines were cut."""

    lines: list[LogLine] = field(default_factory=list)
    truncated: bool = False


def read_logs(
    client: docker.APIClient,
    container: str,
    *,
    tail: int,
    masker: Masker,
    line_limit: int,
    total_limit: int,
    since: float | None = None,
) -> LogTail:
    """The container's last `tail` lines, stdout and stderr in order, each masked, then cut to `line_limit` bytes,
    the newest kept within `total_limit` bytes.

    Docker stores a long line as 16 KiB pieces, each its own message with a timestamp; the pieces are joined
    here, keeping only what can be shown (plus room to mask a secret that crosses the cut). Memory stays about
    `total_limit` whatever the runtime wrote.
    """
    keep = line_limit + masker.longest
    streams = [
        _lines(
            client.logs(
                container,
                stdout=name == "stdout",
                stderr=name == "stderr",
                stream=True,
                follow=False,
                timestamps=True,
                tail=tail,
                since=since,
            ),
            name,
            keep,
        )
        for name in ("stdout", "stderr")
    ]
    result = LogTail()
    kept: deque[LogLine] = deque()
    size = 0
    for time_, stream, raw, cut in heapq.merge(*streams, key=lambda item: _sortable(item[0])):
        masked = masker.mask(raw.decode("utf-8", "replace"))
        text = clip_line(masked, line_limit)
        result.truncated |= cut or text != masked
        kept.append(LogLine(time=time_, stream=stream, text=text))
        size += len(text.encode("utf-8", "surrogatepass")) + 1
        while size > total_limit or len(kept) > tail:
            size -= len(kept.popleft().text.encode("utf-8", "surrogatepass")) + 1
            result.truncated = True
    result.lines = list(kept)
    return result


def _lines(
    frames: Iterable[bytes], stream: Literal["stdout", "stderr"], keep: int
) -> Iterator[tuple[str | None, Literal["stdout", "stderr"], bytes, bool]]:
    """(time, stream, first `keep` bytes of the line, whether bytes were dropped) for each line of one stream."""
    time_: str | None = None
    buffer = bytearray()
    dropped = False
    for frame in frames:
        stamp, _, message = frame.partition(b" ")
        if time_ is None:
            time_ = stamp.decode("ascii", "replace")
        room = keep - len(buffer)
        body = message[:-1] if message.endswith(b"\n") else message
        if room > 0:
            buffer += body[:room]
        dropped |= len(body) > max(room, 0)
        if message.endswith(b"\n"):
            yield time_, stream, bytes(buffer), dropped
            time_, buffer, dropped = None, bytearray(), False
    if buffer or time_ is not None:
        yield time_, stream, bytes(buffer), dropped


def _sortable(stamp: str | None) -> str:
    # RFC 3339 with nanoseconds, trailing zeros trimmed by Docker: pad the fraction so text order is time order.
    if not stamp:
        return ""
    head, dot, rest = stamp.partition(".")
    if not dot:
        return head.rstrip("Z") + ".000000000Z"
    return f"{head}.{rest.rstrip('Z').ljust(9, '0')}Z"


class PullTimedOut(Exception):
    """The pull did not end by its deadline; its connection to the engine was closed, which stops it."""


class PullStream:
    """The engine's streaming pull (`POST /images/create`), bounded by a deadline enforced from outside the stream.

    The SDK's `pull()` reads without any socket timeout, so a registry that accepts the connection and then says
    nothing holds a deploy until the engine's own limit, and one that trickles holds it longer still. Here the
    wait for the answer's headers is bounded by the time left, and a timer shuts the connection down at the
    deadline whatever the stream is doing; the engine then cancels the pull. This uses the SDK's request helpers
    (`_post`, `_get_raw_response_socket`, `_stream_helper`), the ones its own `pull()` is built from.
    """

    def __init__(
        self, client: docker.APIClient, repository: str, tag: str, *, auth: dict[str, str] | None, deadline: float
    ) -> None:
        self.client, self.repository, self.tag, self.auth, self.deadline = client, repository, tag, auth, deadline
        self.expired = False
        self._response: requests.Response | None = None
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Iterator[dict[str, Any]]:
        client = self.client
        if self.auth is not None:
            headers = {"X-Registry-Auth": docker.auth.encode_header(self.auth)}
        else:
            found = docker.auth.get_config_header(client, docker.auth.resolve_repository_name(self.repository)[0])
            headers = {"X-Registry-Auth": found} if found else {}
        params = {"fromImage": self.repository, "tag": self.tag}
        try:
            self._response = client._post(
                client._url("/images/create"), params=params, headers=headers, stream=True, timeout=self._left()
            )
        except DOCKER_ERRORS:
            self._check_deadline()
            raise
        client._raise_for_status(self._response)
        socket_ = client._get_raw_response_socket(self._response)
        self._timer = threading.Timer(self._left(), self._expire, args=(socket_,))
        self._timer.daemon = True
        self._timer.start()
        return self._records()

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._response is not None:
            self._response.close()

    def _records(self) -> Iterator[dict[str, Any]]:
        try:
            for record in self.client._stream_helper(self._response, decode=True):
                self._check_deadline()
                yield record
        except Exception:  # a connection shut at the deadline ends the read in urllib3's own words
            self._check_deadline()
            raise
        self._check_deadline()

    def _left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def _check_deadline(self) -> None:
        if self.expired or time.monotonic() >= self.deadline:
            raise PullTimedOut()

    def _expire(self, found: Any) -> None:
        self.expired = True
        with contextlib.suppress(OSError):
            getattr(found, "_sock", found).shutdown(socket.SHUT_RDWR)  # a SocketIO holds the socket as _sock


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

    def __init__(self, connect: Connect = connect) -> None:
        self.connect = connect
        self.digests = DigestCache()
        self._local = threading.local()
        self._fresh: dict[tuple[tuple[str, str], ...], FreshReads] = {}
        self._fresh_lock = threading.Lock()

    def reader(self) -> docker.APIClient:
        """This thread's kept client: status is read often, and a new socket each time is slow."""
        client: docker.APIClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.connect(timeout=self.STATUS_TIMEOUT)
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
