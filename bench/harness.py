"""What the agent benchmarks share: the lab they run in, the agent's HTTP API, timing and the verdict table.

The lab is tools/lab.py's: a throwaway registry, the example runtime image, the real agent under gunicorn
on loopback with token auth. The runtime is rebuilt without its healthcheck (`HEALTHCHECK NONE`) so that
the agent's verify ("running", stable for 0 s) and a plain "poll until running" wait for the same thing.
Everything a Lab starts or creates is removed when it closes, on failure too.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import docker

REPO = Path(__file__).resolve().parent.parent
# tools/ is not a package (the tests put it on sys.path the same way); the checkout before any installed copy.
sys.path[:0] = [str(REPO / "tools"), str(REPO)]
import deployjob as deployjob  # noqa: E402  (re-exported: bench/install.py imports it from here)
import lab  # noqa: E402
from runner.core.plan import load_plan  # noqa: E402

RUNS = 5
PREFIX = "deployplan-bench"
REPOSITORY = "bench/deployplan"  # owner/repo of the plan: the image is <registry>/bench/deployplan/runtime:<tag>
RUNTIME_ENV_NAMES = ("RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL")
AGENT_COMMAND = [sys.executable, "-c", "from agent.main import main; main()"]


# -- timing and reporting


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(action: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Target:
    """One target: a figure against its baseline (ratio) or an absolute limit, and whether it is met."""

    name: str
    figure: float
    unit: str
    limit: float
    baseline: float | None = None
    baseline_name: str = ""
    per_baseline: bool = False  # the limit is a ratio to the baseline, not an absolute figure

    @property
    def ratio(self) -> float | None:
        return self.figure / self.baseline if self.baseline else None

    @property
    def passed(self) -> bool:
        value = self.ratio if self.per_baseline else self.figure
        return value is not None and (value >= self.limit if self.unit == "req/s" else value <= self.limit)

    def row(self) -> list[str]:
        ratio = self.ratio
        sign = ">=" if self.unit == "req/s" else "<="
        limit = f"{sign} {self.limit:g}x" if self.per_baseline else f"{sign} {self.limit:g} {self.unit}"
        return [
            self.name,
            fmt(self.figure, self.unit),
            f"{fmt(self.baseline, self.unit)} ({self.baseline_name})" if self.baseline is not None else "-",
            f"{ratio:.2f}x" if ratio is not None else "-",
            limit,
            "PASS" if self.passed else "FAIL",
        ]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:.1f} {unit}"


def table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows under a header, columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def report_targets(targets: list[Target], *, skipped: dict[str, str] | None = None) -> int:
    """Print the verdict table (skipped targets with their reason); 0 when every measured target passes."""
    print()
    rows = [t.row() for t in targets] + [[name, "-", "-", "-", "-", "SKIP"] for name in skipped or {}]
    table(["target", "figure", "baseline", "ratio", "limit", "verdict"], rows)
    for name, reason in (skipped or {}).items():
        print(f"SKIP {name}: {reason}")
    return 0 if all(t.passed for t in targets) else 1


def proc_field(path: str, key: str) -> str:
    """The value of the first `key: value` line of a /proc file, or empty."""
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def machine() -> str:
    """nproc, memory, CPU model, Docker version, the load right now and the date: the figures' context."""
    cpu = proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    mem_kb = int(proc_field("/proc/meminfo", "MemTotal").split()[0])
    docker_version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 2**20:.1f} GiB, Docker {docker_version or 'unknown'}, "
        f"Python {platform.python_version()}, load {load}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


# -- the agent's API


@dataclass(frozen=True)
class AgentApi:
    """Plain JSON calls to the agent with the bench token; errors come back as (status, body)."""

    url: str
    token: str

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"{}")

    def deploy(self, plan: dict[str, Any], env: dict[str, str], *, timeout: float = 60) -> dict[str, Any]:
        """POST the deploy (waiting out the previous deploy's lock) and follow it until it ends."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.call("POST", "/v1/deploy", {"plan": plan, "env": env, "dry_run": False})
            if status == 202:
                break
            if status != 409 or time.monotonic() > deadline:
                raise lab.LabError(f"deploy refused ({status}): {body}")
            time.sleep(0.05)
        while time.monotonic() < deadline:
            _, deployment = self.call("GET", body["status_url"])
            if deployment.get("state") != "running":
                if deployment.get("state") != "succeeded":
                    raise lab.LabError(f"deployment failed: {deployment.get('error')}\n{deployment.get('logs')}")
                return deployment
            time.sleep(0.05)
        raise lab.LabError(f"deployment {body['deployment_id']} did not finish within {timeout} s")


def answers(url: str, *, token: str | None = None) -> bool:
    """Whether `url` answers 200 right now (with the bench token when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        e.close()  # it holds the response, which would warn when collected
        return False
    except OSError:  # not listening yet
        return False


def worker_pids(master: int) -> list[int]:
    """The gunicorn master's child processes (its workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return sorted(children)


def rss_mb(pid: int) -> float:
    """VmRSS of one process, in MB (10^6 bytes)."""
    return int(proc_field(f"/proc/{pid}/status", "VmRSS").split()[0]) * 1024 / 1e6


# -- the lab


def installed_venv(root: Path) -> Path:
    """A fresh venv (no system site-packages) with this checkout installed as the deploy job installs it
    (deploy.yml's install step: the CLI alone from requirements/deploy.txt, then the checkout without
    dependencies): its `bin/deployplan` is the console script pip writes, with nothing of this machine's Python on
    its path."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = deployjob.run_install_step(venv, deployjob.copy_checkout(root / "checkout"), os.environ)
    if result.returncode != 0:
        raise RuntimeError(f"deploy.yml's install step failed:\n{result.stdout}{result.stderr}")
    return venv


def write_dockerfile_context(root: Path, dockerfile: str) -> Path:
    context = Path(tempfile.mkdtemp(prefix="context-", dir=root))
    (context / "Dockerfile").write_text(dockerfile, "utf-8")
    return context


@dataclass
class Lab:
    """A registry, runtime images without a healthcheck, agents under gunicorn; all removed by close()."""

    name: str
    client: docker.DockerClient = field(default_factory=docker.from_env)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{PREFIX}-")))
    registry: lab.Registry = field(default_factory=lab.Registry)
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    agents: list[lab.AgentServer] = field(default_factory=list)

    def __enter__(self) -> Self:
        try:
            self.registry.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def image_repository(self) -> str:
        return f"{self.registry.host}/{REPOSITORY}/runtime"

    def container(self, env: str) -> str:
        return f"{PREFIX}-{self.name}-{env}"

    def push_runtime(self, tag: str) -> str:
        """Build the example runtime, then `FROM` it with `HEALTHCHECK NONE` as `tag`; push it, keep it local."""
        base, ref = f"{self.image_repository}:{tag}-with-healthcheck", f"{self.image_repository}:{tag}"
        lab.build_runtime_image(self.client, base, label=f"{self.name}-{tag}")
        context = write_dockerfile_context(self.root, f"FROM {base}\nHEALTHCHECK NONE\n")
        self.client.images.build(path=str(context), tag=ref, rm=True, forcerm=True)
        self.client.images.remove(base)
        lab.push(self.client, ref)
        return ref

    def agent_env(self, state_dir: Path) -> dict[str, str]:
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),  # this checkout's agent, whatever is installed
            **lab.agent_settings(
                state_dir=state_dir,
                image_repository=self.image_repository,
                containers={"dev": self.container("dev"), "prod": self.container("prod")},
                volumes={"dev": f"{data}:/var/lib/runtime:rw", "prod": "none"},
                token=self.token,
            ),
        }
        if "DOCKER_HOST" in os.environ:
            env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        return env

    def agent(self, *, state_dir: Path | None = None, wait: bool = True) -> lab.AgentServer:
        """The real agent under gunicorn (the project's config: 2 gthread workers x 16 threads)."""
        state_dir = state_dir or Path(tempfile.mkdtemp(prefix="state-", dir=self.root))
        log_path = state_dir.parent / f"agent-{len(self.agents)}.log"
        server = lab.AgentServer(self.agent_env(state_dir), log_path=log_path, command=AGENT_COMMAND)
        self.agents.append(server)
        return server.start(wait=wait)

    def api(self, server: lab.AgentServer) -> AgentApi:
        return AgentApi(server.url, self.token)

    def runtime_env(self) -> dict[str, str]:
        return {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": secrets.token_hex(12)}

    def plan(self, tag: str, *, verify_timeout: int = 10, stop_timeout: int = 0, stable_for: int = 0) -> dict[str, Any]:
        """plans/runtime.yaml rendered for dev and `tag` by the real renderer (`stable_for: 0` unless given)."""
        raw = plan_text(self.registry.host, verify_timeout=verify_timeout, stop_timeout=stop_timeout)
        raw = raw.replace("stable_for: 0\n", f"stable_for: {stable_for}\n")
        return load_plan(raw.encode(), source="runtime.yaml", env="dev", tag=tag, repository=REPOSITORY).data

    def close(self) -> None:
        for server in self.agents:
            server.stop()
        lab.remove_containers(self.client, f"{PREFIX}-{self.name}-")
        lab.remove_images(self.client, f"{self.registry.host}/")
        self.registry.stop()
        self.client.close()
        shutil.rmtree(self.root, ignore_errors=True)


def plan_text(registry: str, *, verify_timeout: int, stop_timeout: int) -> str:
    """plans/runtime.yaml pointed at the lab registry, `stable_for: 0`, the given timeouts."""
    text = (REPO / "plans" / "runtime.yaml").read_text("utf-8")
    changes = {
        "ghcr.io/": f"{registry}/",
        "stop_timeout: 30\n": f"stop_timeout: {stop_timeout}\n",
        "    timeout: 60\n": f"    timeout: {verify_timeout}\n",
        "stable_for: 5\n": "stable_for: 0\n",
    }
    for old, new in changes.items():
        if text.count(old) != 1:
            raise lab.LabError(f"plans/runtime.yaml changed: {old!r} is no longer there exactly once")
        text = text.replace(old, new)
    return text
