"""A person's browser in front of the agent: Cloudflare Access played by a loopback proxy, headless Chromium, and a
PNG reader (standard library only) that tells a screenshot with content from a blank one."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import lab
from accesskeys import HEADER

# -- Cloudflare Access: a reverse proxy that signs each request for a person

# Meant for one connection only (RFC 9110, 7.6.1): never passed on, in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Forwarded:
    """One request the proxy passed on, and the agent's status."""

    method: str
    path: str
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser that hangs up early is no error here


class AccessProxy:
    """Forwards GET and HEAD to the agent with a `Cf-Access-Jwt-Assertion` header that `token()` makes (a fresh
    one per request, as Access adds to every request), and hands back the agent's status, end-to-end headers and
    body unchanged. A header of that name sent by the client is dropped, as Access does."""

    def __init__(self, upstream: str, token: Callable[[], str], *, timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{upstream}: expected http://host:port")
        self._upstream = (parts.hostname, parts.port or 80)
        self._token = token
        self._timeout = timeout
        self._lock = threading.Lock()
        self._forwarded: list[Forwarded] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._forward(self)

            def do_HEAD(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", lab.free_port()), Handler)
        self.thread_name = f"access-proxy-{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def forwarded(self) -> list[Forwarded]:
        with self._lock:
            return list(self._forwarded)

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() != HEADER.lower()
        }
        headers[HEADER] = self._token()
        connection = http.client.HTTPConnection(*self._upstream, timeout=self._timeout)
        try:
            # The browser's Host goes on (http.client adds none of its own then), as behind Access.
            connection.request(handler.command, handler.path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            status, reason, answer = response.status, response.reason, response.getheaders()
        except (OSError, http.client.HTTPException) as e:
            status, reason, body = 502, "Bad Gateway", f"the agent did not answer: {e}\n".encode()
            answer = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        finally:
            connection.close()
        with self._lock:
            self._forwarded.append(Forwarded(handler.command, handler.path, status))
        # send_response_only: no Server or Date of the proxy's own next to the agent's.
        handler.send_response_only(status, reason)
        kept = [(name, value) for name, value in answer if name.lower() not in HOP_BY_HOP]
        for name, value in kept:
            handler.send_header(name, value)
        if handler.command != "HEAD" and not any(name.lower() == "content-length" for name, _ in kept):
            handler.send_header("Content-Length", str(len(body)))  # the agent streamed it (chunked)
        handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- headless Chromium


def _find_chromium() -> Path:
    """Debian's `chromium`, or the `chromium-browser` GitHub's Ubuntu runners carry."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return Path("/usr/bin/chromium")


CHROMIUM = _find_chromium()
# Without the background-networking flags it tries the network (closed in the lab) and waits for it.
FLAGS = (
    "--headless",
    "--no-sandbox",  # it runs as root here
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class BrowserError(Exception):
    """Chromium failed, or did not finish in time."""


class Chromium:
    """One headless Chromium per call, each with a fresh profile under `workdir` (removed afterwards), in a process
    group of its own that is killed when the call returns, so nothing of it outlives the call."""

    def __init__(self, workdir: Path, *, binary: Path = CHROMIUM, timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.binary = binary
        self.timeout = timeout

    def dump_dom(self, url: str) -> str:
        """The DOM after the load event, serialized."""
        return self._run("--dump-dom", url)

    def screenshot(self, url: str, width: int, height: int, path: Path) -> Path:
        """A PNG of the viewport, `width` x `height` CSS pixels at a device scale factor of 1."""
        path.unlink(missing_ok=True)
        self._run(f"--window-size={width},{height}", "--force-device-scale-factor=1", f"--screenshot={path}", url)
        if not path.is_file():
            raise BrowserError(f"chromium wrote no screenshot to {path}")
        return path

    def _run(self, *args: str) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=self.workdir))
        command = [str(self.binary), *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                cwd=profile,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            shutil.rmtree(profile, ignore_errors=True)
            raise BrowserError(f"{self.binary} not found: run tools/bootstrap.sh (it installs chromium)") from e
        try:
            try:
                out, err = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                out, err = process.communicate()
                raise BrowserError(f"chromium {' '.join(args)} took over {self.timeout:.0f} s:\n{_tail(err)}") from None
            if process.returncode != 0:
                raise BrowserError(f"chromium {' '.join(args)} exited with {process.returncode}:\n{_tail(err)}")
            return out.decode("utf-8", errors="replace")
        finally:
            _kill_group(process.pid)  # a helper process (zygote, renderer) left behind
            shutil.rmtree(profile, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(err: bytes, lines: int = 20) -> str:
    return "\n".join(err.decode("utf-8", errors="replace").splitlines()[-lines:])


# -- PNG, enough of it to read a screenshot

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # colour type: RGB, RGBA


class PngError(ValueError):
    """Not a PNG this reader handles (8-bit RGB or RGBA, not interlaced), or a broken one."""


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    colours: int  # distinct pixel values (RGB, or RGBA with the alpha)


def read_png(data: bytes) -> Png:
    """Width, height and the number of distinct colours of an 8-bit RGB or RGBA, non-interlaced PNG."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG (no signature)")
    header: tuple[int, ...] | None = None
    idat = bytearray()
    pos = len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise PngError("truncated: no IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        crc_at = pos + 8 + length
        if crc_at + 4 > len(data):
            raise PngError(f"truncated {kind!r} chunk")
        (crc,) = struct.unpack(">I", data[crc_at : crc_at + 4])
        if zlib.crc32(kind + chunk) != crc:
            raise PngError(f"bad CRC in the {kind!r} chunk")
        pos = crc_at + 4
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if header is None:
        raise PngError("no IHDR chunk")
    width, height, depth, colour_type, compression, filter_method, interlace = header
    if depth != 8 or colour_type not in CHANNELS:
        raise PngError(f"bit depth {depth}, colour type {colour_type}: only 8-bit RGB (2) and RGBA (6) are read")
    if compression != 0 or filter_method != 0 or interlace != 0:
        raise PngError(f"compression {compression}, filter {filter_method}, interlace {interlace}: not read here")
    bpp = CHANNELS[colour_type]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    if len(raw) != height * (stride + 1):
        raise PngError(f"{len(raw)} bytes of image data for {width}x{height} (expected {height * (stride + 1)})")
    colours: set[tuple[int, ...]] = set()
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        colours.update(zip(*(line[c::bpp] for c in range(bpp)), strict=True))
        previous = bytes(line)
    return Png(width=width, height=height, colours=len(colours))


def _unfilter(kind: int, line: bytearray, above: bytes, bpp: int) -> bytearray:
    """Undo one scanline's filter (PNG spec, 9.2), in place: None, Sub, Up, Average or Paeth."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: plus the byte one pixel to the left
        for i in range(bpp, len(line)):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
        return line
    if kind == 2:  # Up: plus the byte above
        return bytearray((x + b) & 0xFF for x, b in zip(line, above, strict=True))
    if kind == 3:  # Average: plus the floor of the mean of left and above
        for i in range(len(line)):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + above[i]) >> 1)) & 0xFF
        return line
    if kind == 4:  # Paeth: plus whichever of left, above, upper left is nearest to left + above - upper left
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = above[i]
            c = above[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + predictor) & 0xFF
        return line
    raise PngError(f"unknown filter type {kind}")
