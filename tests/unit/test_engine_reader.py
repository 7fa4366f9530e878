"""The lean Engine API reader against a small engine on a unix socket: answers, errors, a closed connection."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest

from agent.enginereader import EngineReader

Answer = Callable[[bytes], bytes | None]  # the raw request -> the raw answer, or None to hang up


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Callable[[list[Answer]], str]]:
    """An engine that answers each connection's requests with the next answers given (None: close it)."""
    server = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "docker.sock")
    server.bind(path)
    server.listen(5)
    answers: list[Answer] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while answers:
                    request = conn.recv(65536)
                    reply = answers.pop(0)(request)
                    if reply is None or not request:
                        break
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def start(given: list[Answer]) -> str:
        answers.extend(given)
        return f"unix://{path}"

    yield start
    # close() alone does not wake a thread blocked in accept(): shut the socket down first, then wait for it.
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the fake engine did not stop"


def ok(body: dict[str, object], status: int = 200) -> Answer:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return lambda request: head.encode() + data


def hang_up(request: bytes) -> None:
    return None


def test_answers_and_errors_are_the_sdks(engine: Callable[[list[Answer]], str]) -> None:
    host = engine([ok({"Id": "c1"}), ok({"message": "No such container: x"}, 404), ok({"message": "boom"}, 500)])
    reader = EngineReader.for_host(host, tls=False, timeout=5)
    assert reader is not None
    assert reader.inspect_container("c1") == {"Id": "c1"}
    with pytest.raises(docker.errors.NotFound, match="No such container"):
        reader.inspect_container("x")
    with pytest.raises(docker.errors.APIError, match="500 boom"):
        reader.inspect_container("y")
    reader.close()


def test_a_kept_connection_closed_by_the_engine_is_opened_again_once(engine: Callable[[list[Answer]], str]) -> None:
    host = engine([ok({"Id": "c1"}), hang_up, ok({"Id": "c1"})])
    reader = EngineReader.for_host(host, tls=False, timeout=5)
    assert reader is not None
    assert reader.inspect_container("c1") == {"Id": "c1"}
    assert reader.inspect_container("c1") == {"Id": "c1"}  # the first try met the closed connection
    reader.close()


def test_a_new_connection_closed_at_once_is_an_os_error(engine: Callable[[list[Answer]], str]) -> None:
    """Found in review: on a connection's first use, a hang-up left the answer unbound (an UnboundLocalError,
    a 500 for every status read) instead of the OSError every caller handles as Docker unreachable."""
    reader = EngineReader.for_host(engine([hang_up]), tls=False, timeout=5)
    assert reader is not None
    with pytest.raises(OSError):
        reader.inspect_container("c1")
    reader.close()


def test_an_answer_that_is_not_json_is_an_os_error(engine: Callable[[list[Answer]], str]) -> None:
    """Found in review: a 200 whose body is not JSON raised a ValueError, which no caller handles (a 500 for
    /v1/status, /v1/metrics and the page) where the SDK's error means "Docker unreachable"."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 8\r\n\r\n"
    reader = EngineReader.for_host(engine([lambda request: head + b"<html>hi"]), tls=False, timeout=5)
    assert reader is not None
    try:
        with pytest.raises(OSError, match="not JSON"):
            reader.inspect_container("c1")
    finally:
        reader.close()
