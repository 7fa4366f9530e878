"""The engine's streaming pull, bounded by a deadline enforced from outside the stream."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.auth
import requests

from agent.dockerio import DOCKER_ERRORS


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
