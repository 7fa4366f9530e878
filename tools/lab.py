"""The local lab: a throwaway registry and the example runtime image (tests, demo)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO_ROOT / "infra" / "runtime"
BUSYBOX = Path("/bin/busybox")
READY_TIMEOUT = 15.0
STOP_GRACE = 5.0


class LabError(Exception):
    """A lab resource could not be set up or used."""


PORTS_VARIABLE = "DEPLOYPLAN_TEST_PORTS"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago: any port the system picks, or one of
    DEPLOYPLAN_TEST_PORTS (`40000-40999`) when it is set, for a machine whose firewall or neighbours want the
    tests and the demo kept within a range."""
    low, high = port_range(os.environ.get(PORTS_VARIABLE, ""))
    candidates = [0] if low == 0 else random.sample(range(low, high + 1), high - low + 1)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise LabError(f"no free port in {PORTS_VARIABLE}={low}-{high}")


class LoopbackHttp:
    """A threaded HTTP server on a free loopback port, for the stand-ins of outside services (GitHub's API,
    Cloudflare's edge) in the tests."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _bound(handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextlib.contextmanager
def silent_registry() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never answers, as a hung registry does; its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", free_port()))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up early is no error of the stand-in's


def _bound(handler: type[BaseHTTPRequestHandler], attempts: int = 5) -> ThreadingHTTPServer:
    """A server bound to a free port: free_port() only says a port was free a moment ago, and another run
    sharing DEPLOYPLAN_TEST_PORTS may take it first; then the next one."""
    for _ in range(attempts - 1):
        try:
            return _QuietServer(("127.0.0.1", free_port()), handler)
        except OSError:
            continue
    return _QuietServer(("127.0.0.1", free_port()), handler)


def port_range(text: str) -> tuple[int, int]:
    """`LOW-HIGH` (1024-65535, LOW <= HIGH) as two ints; empty: (0, 0), the system's choice."""
    if not text:
        return 0, 0
    low, dash, high = text.partition("-")
    if not (dash and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
        raise LabError(f"{PORTS_VARIABLE}={text!r}: expected LOW-HIGH within 1024-65535, e.g. 40000-40999")
    return int(low), int(high)


def make_venv(path: Path) -> Path:
    """A venv at `path` that sees the packages this Python sees, inside a virtualenv or not; returns its python.

    `python -m venv --system-site-packages` run from inside a virtualenv links the new one to the *base*
    interpreter, whose site-packages lack what was installed into the virtualenv (gunicorn, Flask, ...): so
    this Python's own site-packages are added after the new venv's, through a .pth file.
    """
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    if sys.prefix != sys.base_prefix:
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        seen = [p for p in site.getsitepackages() if Path(p).is_dir()]
        (Path(purelib) / "deployplan-outer-site.pth").write_text("".join(f"{p}\n" for p in seen), encoding="utf-8")
    return python


class Registry:
    """A `docker-registry serve` process on loopback; its storage is a temp dir it owns."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start serving; after `stop(keep_storage=True)`, same port and same storage."""
        if self._process is not None:
            raise LabError(f"registry {self.host} is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="deployplan-registry-"))
        config = self._dir / "config.yml"
        # JSON is YAML, and keeps this module stdlib-only.
        config.write_text(json.dumps(self._config(self._dir)), encoding="utf-8")
        with open(self._dir / "registry.log", "ab") as log:
            command = ["docker-registry", "serve", str(config)]
            try:
                self._process = subprocess.Popen(command, stdout=log, stderr=log)
            except FileNotFoundError as e:
                raise LabError("docker-registry not found: install docker-registry") from e
        self._wait_ready()
        return self

    def stop(self, *, keep_storage: bool = False) -> None:
        """Stop the process; remove its temp dir unless `keep_storage`."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not keep_storage and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _config(self, root: Path) -> dict[str, Any]:
        return {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(root / "storage")},
                "delete": {"enabled": True},
            },
            # A fixed secret keeps a startup warning out of the log.
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while self._process.poll() is None and time.monotonic() < deadline:
            if _answers_200(f"http://{self.host}/v2/"):
                return
            time.sleep(0.1)
        code = self._process.poll()
        # Keep the storage and the log: the caller's stop() removes them.
        self.stop(keep_storage=True)
        why = f"exited with {code}" if code is not None else "did not answer /v2/"
        raise LabError(f"registry {self.host} {why} within {READY_TIMEOUT:.0f}s; log tail:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        path = self._dir / "registry.log" if self._dir else None
        if path is None or not path.exists():
            return "(no log)"
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n".join(tail) or "(empty log)"


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        e.close()  # it holds the response, which would warn when collected
        return False
    except OSError:  # URLError included: not listening yet
        return False


def build_runtime_image(client: docker.DockerClient, ref: str, *, label: str | None = None) -> str:
    """Build infra/runtime/ as `ref`; a distinct `label` gives a distinct digest."""
    if not BUSYBOX.is_file():
        raise LabError(f"{BUSYBOX} not found: install busybox-static")
    labels = {"deployplan.lab.variant": label} if label is not None else None
    with tempfile.TemporaryDirectory(prefix="deployplan-runtime-context-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(RUNTIME_DIR, context)
        shutil.copy2(BUSYBOX, context / "busybox")
        try:
            image, _log = client.images.build(path=str(context), tag=ref, rm=True, forcerm=True, labels=labels)
        except docker.errors.BuildError as e:
            output = "".join(str(record.get("stream", "")) for record in e.build_log)
            raise LabError(f"building {ref} failed: {e.msg}\n{output[-2000:]}") from e
        except docker.errors.APIError as e:
            raise LabError(f"building {ref} failed: {e.explanation or e}") from e
    return str(image.id)


def split_ref(ref: str) -> tuple[str, str]:
    """Split `registry[:port]/path/name:tag` into repository and tag."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not repository:
        raise LabError(f"image {ref}: expected <repository>:<tag>")
    return repository, tag


def push(client: docker.DockerClient, ref: str) -> str:
    """Push `ref`, checking every progress record; return the pushed digest."""
    repository, tag = split_ref(ref)
    digest: str | None = None
    # Read the stream to its end first, so its connection is always closed.
    records = list(client.api.push(repository, tag=tag, stream=True, decode=True))
    for record in records:
        if "error" in record or "errorDetail" in record:
            detail = record.get("errorDetail") or {}
            raise LabError(f"pushing {ref} failed: {detail.get('message') or record.get('error')}")
        aux = record.get("aux") or {}
        if "Digest" in aux:
            digest = str(aux["Digest"])
    if digest is None:
        raise LabError(f"pushing {ref}: the engine reported no digest")
    return digest


def remove_images(client: docker.DockerClient, prefix: str) -> None:
    """Remove every local reference starting with `prefix`, tags and digests (`repo@sha256:...`, which a pull
    leaves behind); an image with no reference left goes. References outside the prefix are kept."""
    for image in client.images.list(all=True):
        references = [*image.tags, *image.attrs.get("RepoDigests", [])]
        for reference in references:
            if reference.startswith(prefix):
                with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                    client.images.remove(reference, force=True)


def remove_containers(client: docker.DockerClient, names_prefix: str) -> None:
    """Remove (force) every container, any state, whose name starts with the prefix."""
    # The engine's name filter is a substring match: check the prefix here.
    for container in client.containers.list(all=True, filters={"name": names_prefix}):
        if container.name is not None and container.name.startswith(names_prefix):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def agent_settings(
    *,
    state_dir: Path,
    image_repository: str,
    containers: dict[str, str],
    volumes: dict[str, str],
    token: str,
    runtime_logs: str = "max-size=10m,max-file=3",
) -> dict[str, str]:
    """Every DEPLOY_AGENT_* variable of an agent on loopback for the lab (tests, demo, benchmarks, recordings):
    token auth, GitHub OIDC off, a fresh port; `containers` and `volumes` by environment name."""
    return {
        "DEPLOY_AGENT_BIND": f"127.0.0.1:{free_port()}",
        "DEPLOY_AGENT_STATE_DIR": str(state_dir),
        "DEPLOY_AGENT_ENVIRONMENTS": ",".join(containers),
        "DEPLOY_AGENT_IMAGE_REPOSITORY": image_repository,
        **{f"DEPLOY_AGENT_CONTAINER_{env.upper()}": name for env, name in containers.items()},
        **{f"DEPLOY_AGENT_VOLUMES_{env.upper()}": volumes[env] for env in containers},
        "DEPLOY_AGENT_RESTART_POLICY": "unless-stopped",
        "DEPLOY_AGENT_RUNTIME_LOGS": runtime_logs,
        "DEPLOY_AGENT_AUTH": "token",
        "DEPLOY_AGENT_TOKEN": token,
        "DEPLOY_AGENT_GITHUB_OIDC": "off",
    }


class AgentServer:
    """The real deploy agent under gunicorn on loopback, configured only by the environment it is given."""

    def __init__(self, env: dict[str, str], *, log_path: Path, command: list[str] | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.command = command or ["deploy-agent"]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.env['DEPLOY_AGENT_BIND']}"

    def start(self, *, wait: bool = True) -> Self:
        """Start it; with `wait`, until /healthz answers (clear error with the log tail otherwise)."""
        with open(self.log_path, "ab") as log:
            # Its own process group, so kill() reaches the gunicorn workers too.
            # Run away from the source tree: gunicorn puts its working directory first on sys.path.
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.log_path.parent,
            )
        if wait:
            deadline = time.monotonic() + READY_TIMEOUT
            while not _answers_200(f"{self.url}/healthz"):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_path.read_text("utf-8", errors="replace")[-3000:]
                    raise LabError(f"the agent did not come up on {self.url}:\n{tail}")
                time.sleep(0.05)
        return self

    def stop(self) -> int | None:
        """SIGTERM (a graceful gunicorn stop), SIGKILL after the grace; returns the exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        process.terminate()
        try:
            return process.wait(timeout=STOP_GRACE * 4)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def kill(self) -> None:
        """SIGKILL gunicorn's whole process group member by member: what a power cut does to a deploy."""
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")
