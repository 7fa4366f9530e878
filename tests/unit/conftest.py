"""The unit tier: the CLI run in-process, the agent's app with a recording Docker, plain data in and out."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import TestResponse

from accesskeys import Jwks, Key
from agent.app import create_app
from agent.auditlog import AuditLog
from fakedocker import FakeDocker
from githuboidc import GithubIssuer, github_issuer
from runner.cli.console import Console
from runner.cli.main import run


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """`deployplan` through its `run(argv, console)` entry, in this process: what the console script does, minus
    the interpreter start."""

    def run(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
        environ = dict(env or {})
        out, err = io.StringIO(), io.StringIO()
        console = Console(out=out, err=err, github=environ.get("GITHUB_ACTIONS") == "true", environ=environ)
        with contextlib.chdir(cwd):
            code = run(list(args), console)
        return Result(int(code), out.getvalue(), err.getvalue())


@pytest.fixture(scope="session", autouse=True)
def runtime_data() -> Iterator[Path]:
    """dev's mount source, removed after the session."""
    yield RUNTIME_DATA
    shutil.rmtree(RUNTIME_DATA.parent, ignore_errors=True)


@pytest.fixture
def cli() -> InProcessCli:
    return InProcessCli()


# -- the agent's app, served by Flask's test client, with a recording Docker

REPOSITORY = "registry.test/acme/trader/runtime"
REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "unit-test-token-" + "x" * 24
# The agent refuses to start while a mount source is missing: dev's is a real folder of this session.
RUNTIME_DATA = Path(tempfile.mkdtemp(prefix="deployplan-unit-")) / "runtime-dev"
RUNTIME_DATA.mkdir()
DEV_VOLUME = f"{RUNTIME_DATA}:/var/lib/runtime:rw"
AGENT_ENV = {
    "DEPLOY_AGENT_BIND": "127.0.0.1:8700",
    "DEPLOY_AGENT_ENVIRONMENTS": "dev,prod",
    "DEPLOY_AGENT_IMAGE_REPOSITORY": REPOSITORY,
    "DEPLOY_AGENT_CONTAINER_DEV": "runtime-dev",
    "DEPLOY_AGENT_CONTAINER_PROD": "runtime-prod",
    "DEPLOY_AGENT_VOLUMES_DEV": DEV_VOLUME,
    "DEPLOY_AGENT_VOLUMES_PROD": "none",
    "DEPLOY_AGENT_RESTART_POLICY": "unless-stopped",
    "DEPLOY_AGENT_RUNTIME_LOGS": "max-size=50m,max-file=5",
    "DEPLOY_AGENT_AUTH": "token",
    "DEPLOY_AGENT_TOKEN": TOKEN,
    "DEPLOY_AGENT_GITHUB_OIDC": "off",
}
RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "s3cret-api-token-value"}


def plan(tag: str = "1.0.3", env: str = "dev") -> dict[str, Any]:
    """plans/runtime.yaml as rendered for the unit agent's repository."""
    return {
        "version": 1,
        "plan": "runtime",
        "environment": env,
        "image": f"{REPOSITORY}:{tag}",
        "steps": [
            {"name": "Pull the runtime image", "action": "pull", "timeout": 600},
            {"name": "Stop and remove the current runtime", "action": "stop_remove", "stop_timeout": 30},
            {"name": "Start the new runtime", "action": "start"},
            {"name": "Verify the runtime stays up", "action": "verify", "timeout": 60, "stable_for": 5},
        ],
    }


@dataclass
class Api:
    """The agent's app in this process: its test client, the recording Docker behind it, its state directory."""

    app: Flask
    docker: FakeDocker
    state_dir: Path
    headers: dict[str, str]

    def get(self, path: str, **headers: str) -> TestResponse:
        return self.app.test_client().get(path, headers={**self.headers, **headers})

    def post(self, path: str, body: Any, **headers: str) -> TestResponse:
        return self.app.test_client().post(path, json=body, headers={**self.headers, **headers})

    def deploy(self, body: Any, **headers: str) -> TestResponse:
        return self.post("/v1/deploy", body, **headers)

    def audit(self) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def make_api(tmp_path: Path) -> Callable[..., Api]:
    """Agents built by create_app from an environment mapping (changes on top of AGENT_ENV; None removes)."""
    numbers = itertools.count()

    def make(*, docker: FakeDocker | None = None, headers: dict[str, str] | None = None, **changes: str) -> Api:
        docker = docker or FakeDocker()
        state_dir = Path(changes.get("DEPLOY_AGENT_STATE_DIR") or tmp_path / f"state-{next(numbers)}")
        environ = {**AGENT_ENV, "DEPLOY_AGENT_STATE_DIR": str(state_dir), **changes}
        app = create_app(environ={k: v for k, v in environ.items() if v is not None}, docker_connect=docker.connect)
        return Api(app, docker, state_dir, {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers)

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def serve() -> Iterator[Callable[[Api], str]]:
    """Serve an agent's app over HTTP on loopback (werkzeug's server in a thread), for the CLI to talk to."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(api: Api) -> str:
        server = make_server("127.0.0.1", 0, api.app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join()


def record_deployment(
    log: AuditLog, d: str, env: str, tag: str, outcome: str | None, *, digest: str | None = None, **started: Any
) -> None:
    """A deployment in the audit log, as the agent records one: started, and (unless `outcome` is None, still
    running) finished, failed in verify when it failed; `digest` adds the pull that learned it."""
    steps = [{"action": a, "name": a} for a in ("pull", "stop_remove", "start", "verify")]
    fields = {
        "environment": env,
        "image": f"{REPOSITORY}:{tag}",
        "tag": tag,
        "container": f"runtime-{env}",
        "plan": "runtime",
        "steps": steps,
        "env_names": ["RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_KEY", "RUNTIME_LOG_LEVEL"],
        "public_env": ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"],
        "origin": None,
        **started,
    }
    log.append("deployment_started", deployment_id=d, actor="token", **fields)
    if digest is not None:
        log.append("step_succeeded", deployment_id=d, actor="token", step="pull", message="pulled", digest=digest)
    if outcome is not None:
        error = None if outcome == "succeeded" else {"step": "verify", "message": "exited with code 1"}
        log.append("deployment_finished", deployment_id=d, actor="token", state=outcome, error=error, logs=["x"])


# -- signing keys served on loopback: Cloudflare Access's team keys, GitHub's OIDC issuer


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[Jwks, Key]]:
    """A JWKS on loopback serving one RS256 key (and the private key that signs with it)."""
    key, served = Key.new(), Jwks()
    served.serve(key)
    yield served, key
    served.close()


@pytest.fixture(scope="module")
def issuer(jwks: tuple[Jwks, Key]) -> tuple[Jwks, Key, GithubIssuer]:
    """GitHub Actions' OIDC issuer played on that JWKS: the deploy job's tokens, signed with its key."""
    served, key = jwks
    return served, key, github_issuer(served)


def api_document(component: str) -> Draft202012Validator:
    """A validator of one schema of the agent's OpenAPI document (its `$ref`s resolved in the document)."""
    document = yaml.safe_load((REPO_ROOT / "schemas" / "agent-api.openapi.yaml").read_text("utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:agent-api", resource)
    return Draft202012Validator({"$ref": f"urn:agent-api#/components/schemas/{component}"}, registry=registry)
