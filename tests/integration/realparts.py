"""The real parts the integration tier talks to: the installed CLI, Docker, a registry, the agent under gunicorn."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml

import lab

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cli:
    """The installed `deployplan` script, run the way an operator runs it."""

    bin_dir: Path

    def run(
        self, *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_", "CF_ACCESS_"))
        }
        result = subprocess.run(
            [str(self.bin_dir / "deployplan"), *args],
            cwd=cwd,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        record(f"$ deployplan {' '.join(args)}\n{result.stdout}{result.stderr}")
        return result


# Every CLI output and every agent answer of the session is kept here, for the canary sweep at the end.
TRANSCRIPT = Path(tempfile.gettempdir()) / f"deployplan-tests-{os.getpid()}.transcript"


def record(text: str) -> None:
    with TRANSCRIPT.open("a", encoding="utf-8") as f:
        f.write(text + "\n")


@pytest.fixture(scope="session", autouse=True)
def canary_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole session: the canary secret sent in every deploy appears in no log, audit record, job
    summary, agent answer or CLI output the suite produced (a `::add-mask::` line is where it must appear)."""
    yield
    found = []
    files = [
        TRANSCRIPT,
        *(p for p in tmp_path_factory.getbasetemp().rglob("*") if p.is_file() and "venv" not in p.parts),
    ]
    for path in files:
        if not path.exists() or path.stat().st_size > 50 * 1024 * 1024:
            continue
        for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), start=1):
            if CANARY in line and not line.startswith("::add-mask::"):
                found.append(f"{path}:{number}")
    TRANSCRIPT.unlink(missing_ok=True)
    assert not found, f"the canary secret leaked into: {found[:20]}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After every other fixture's cleanup: no container or image of this session is left in Docker."""
    yield
    client = docker.from_env()
    try:
        containers = [c.name for c in client.containers.list(all=True, filters={"name": PREFIX})]
        images = [
            ref
            for image in client.images.list(all=True)
            for ref in (*image.tags, *image.attrs.get("RepoDigests", []))
            if PREFIX in ref
        ]
    finally:
        client.close()
    assert (containers, images) == ([], []), f"left behind: containers {containers}, images {images}"


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """deployplan installed once, non-editable, into a fresh venv (its dependencies, the `agent` extra's too, come
    from the system: tools/bootstrap.sh installs '.[agent,test,dev]'). test_deploy_install.py has the CLI alone."""
    venv = tmp_path_factory.mktemp("venv")
    python = lab.make_venv(venv)  # inside a virtualenv too: it sees this Python's packages
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            str(REPO),
        ],
        check=True,
        cwd=venv,
    )
    return Cli(bin_dir=venv / "bin")


# -- the real parts: Docker Engine, a registry, the example runtime, the agent under gunicorn


RUN_ID = secrets.token_hex(4)
# Everything the suite creates in Docker is named with this prefix, and only that is ever removed.
PREFIX = f"dptest-{RUN_ID}"
CANARY = f"canary-{secrets.token_hex(12)}"
TAGS = ("1.0.0", "1.0.1", "c0ffee" + "0" * 34)
RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": CANARY}
PUBLIC = ("RUNTIME_ENV", "RUNTIME_LOG_LEVEL", "RUNTIME_FAULT")  # Secret: no in infra/ENV_SCHEMA.md


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real Docker Engine; not reachable is a failure, never a skip."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        pytest.fail(f"Docker Engine not reachable ({e}); run tools/bootstrap.sh", pytrace=False)
    yield client
    lab.remove_containers(client, PREFIX)
    client.close()


@pytest.fixture(scope="session")
def registry() -> Iterator[lab.Registry]:
    with lab.Registry() as reg:
        yield reg


@dataclass(frozen=True)
class Images:
    """The example runtime pushed under several tags, with their digests."""

    repository: str
    digests: dict[str, str]

    def ref(self, tag: str) -> str:
        return f"{self.repository}:{tag}"


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient, registry: lab.Registry) -> Iterator[Images]:
    repository = f"{registry.host}/{PREFIX}/runtime"
    digests = {}
    for tag in TAGS:
        lab.build_runtime_image(docker_client, f"{repository}:{tag}", label=tag)
        digests[tag] = lab.push(docker_client, f"{repository}:{tag}")
    # The agent must pull from the registry, not find them locally.
    lab.remove_images(docker_client, repository)
    yield Images(repository=repository, digests=digests)
    lab.remove_containers(docker_client, PREFIX)
    lab.remove_images(docker_client, repository)


def plan_data(
    images: Images, tag: str, *, env: str = "dev", stable_for: int = 1, verify_timeout: int = 20
) -> dict[str, Any]:
    """plans/runtime.yaml rendered for the lab's repository (a test may change it afterwards)."""
    data = yaml.safe_load((REPO / "plans" / "runtime.yaml").read_text())
    data["environment"] = env
    data["image"] = images.ref(tag)
    data["steps"][0]["timeout"] = 60
    data["steps"][1]["stop_timeout"] = 2
    data["steps"][3].update(timeout=verify_timeout, stable_for=stable_for)
    return data


class Agent:
    """One real agent under gunicorn with its own state dir and container names, and a small HTTP client."""

    def __init__(
        self, server: lab.AgentServer, *, token: str, containers: dict[str, str], state_dir: Path, data_dir: Path
    ) -> None:
        self.server = server
        self.data_dir = data_dir
        self.token = token
        self.containers = containers
        self.state_dir = state_dir
        self.http = requests.Session()
        self.http.hooks["response"].append(lambda response, *args, **kwargs: record(response.text))

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url + path, headers=self.headers(), timeout=30)

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + "/v1/deploy", json=body, headers=self.headers(), timeout=30, **kwargs)

    def wait(self, deployment_id: str, *, timeout: float = 60) -> dict[str, Any]:
        """Poll until the deployment leaves `running`."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, Any] = self.get(f"/v1/deployments/{deployment_id}").json()
            if found.get("state") != "running" or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def deploy(self, plan: dict[str, Any], *, env: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        """POST a deploy, expect 202, wait for its end, return the deployment. The variables that ENV_SCHEMA.md
        marks `Secret: no` are declared public, as `deployplan apply` declares them, unless `public_env` is given."""
        env = RUNTIME_ENV if env is None else env
        extra.setdefault("public_env", [name for name in env if name in PUBLIC])
        response = self.post({"plan": plan, "env": env, **extra})
        assert response.status_code == 202, response.text
        return self.wait(response.json()["deployment_id"])

    def audit(self) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self) -> None:
        self.http.close()
        self.server.stop()


def agent_env(
    images: Images, *, state_dir: Path, containers: dict[str, str], token: str, volumes: str
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_AGENT_", "RUNTIME_"))}
    return {
        **base,
        **lab.agent_settings(
            state_dir=state_dir,
            image_repository=images.repository,
            containers=containers,
            volumes=dict.fromkeys(containers, volumes),
            token=token,
            runtime_logs="max-size=1m,max-file=2",
        ),
    }


AgentFactory = Callable[..., Agent]


@contextlib.contextmanager
def agent_factory(cli: Cli, images: Images, docker_client: docker.DockerClient, base: Path) -> Iterator[AgentFactory]:
    """Start real agents (each with its own state dir and container names); all stopped and cleaned up after."""
    started: list[tuple[Agent, str]] = []

    def start(
        *,
        environments: tuple[str, ...] = ("dev", "prod"),
        state_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Agent:
        name = f"{PREFIX}-{secrets.token_hex(3)}"
        containers = {env: f"{name}-{env}" for env in environments}
        state_dir = state_dir or base / f"state-{name}"
        data_dir = base / f"data-{name}"
        data_dir.mkdir()
        token = secrets.token_hex(24)
        env = agent_env(
            images, state_dir=state_dir, containers=containers, token=token, volumes=f"{data_dir}:/var/lib/runtime:rw"
        )
        server = lab.AgentServer(
            {**env, **(extra_env or {})}, log_path=base / f"{name}.log", command=[str(cli.bin_dir / "deploy-agent")]
        )
        agent = Agent(server.start(), token=token, containers=containers, state_dir=state_dir, data_dir=data_dir)
        started.append((agent, name))
        return agent

    try:
        yield start
    finally:
        for agent, name in started:
            agent.close()
            lab.remove_containers(docker_client, name)


@pytest.fixture
def make_agent(cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[AgentFactory]:
    """Agents for one test."""
    with agent_factory(cli, images, docker_client, tmp_path) as start:
        yield start


@pytest.fixture
def agent(make_agent: AgentFactory) -> Agent:
    """A fresh agent serving dev and prod."""
    return make_agent()


@pytest.fixture(scope="module")
def module_agent(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agent]:
    """One agent shared by a module's tests, for tests that leave Docker and the agent's state as they were."""
    with agent_factory(cli, images, docker_client, tmp_path_factory.mktemp("module-agent")) as start:
        yield start()
