"""The operator's side: the installed CLI as a subprocess against the real agent under gunicorn and real Docker.

One agent serves the whole module. Its dev runs the deploy of the `deployed` fixture and nothing else touches
it; tests that deploy again (or fail) do it in prod. Tests that need another agent start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

import lab
from realparts import CANARY, PREFIX, REPO, RUNTIME_ENV, Agent, Cli, Images, agent_env, plan_data

# The plan renders `<registry>/<owner/repo>/runtime`, and --repository must be owner/repo: the suite's images
# are mirrored under this path for this module.
REPOSITORY = f"{PREFIX}/cli"
STEPS = (
    ("pull", "Pull the runtime image"),
    ("stop_remove", "Stop and remove the current runtime"),
    ("start", "Start the new runtime"),
    ("verify", "Verify the runtime stays up"),
)
PROD_ENV = {**RUNTIME_ENV, "RUNTIME_ENV": "prod"}


# -- fixtures


@pytest.fixture(scope="module")
def cli_images(images: Images, registry: lab.Registry, docker_client: docker.DockerClient) -> Iterator[Images]:
    """The suite's runtime images, pushed again under `<registry>/<REPOSITORY>/runtime` (same digests)."""
    repository = f"{registry.host}/{REPOSITORY}/runtime"
    digests = {}
    for tag in images.digests:
        docker_client.images.pull(images.repository, tag=tag).tag(repository, tag=tag)
        digests[tag] = lab.push(docker_client, f"{repository}:{tag}")
    assert digests == images.digests
    # Leave nothing local: agents must pull from the registry.
    lab.remove_images(docker_client, images.repository)
    lab.remove_images(docker_client, repository)
    yield Images(repository=repository, digests=digests)
    lab.remove_images(docker_client, repository)


@contextlib.contextmanager
def running_agent(
    cli: Cli, images: Images, docker_client: docker.DockerClient, root: Path, *, environments: tuple[str, ...]
) -> Iterator[Agent]:
    """A real agent like conftest's `make_agent` starts; stopped and its containers removed after."""
    name = f"{PREFIX}-cli-{secrets.token_hex(3)}"
    containers = {env: f"{name}-{env}" for env in environments}
    state_dir, data_dir = root / f"state-{name}", root / f"data-{name}"
    data_dir.mkdir()
    token = secrets.token_hex(24)
    env = agent_env(
        images, state_dir=state_dir, containers=containers, token=token, volumes=f"{data_dir}:/var/lib/runtime:rw"
    )
    server = lab.AgentServer(env, log_path=root / f"{name}.log", command=[str(cli.bin_dir / "deploy-agent")])
    agent = Agent(server.start(), token=token, containers=containers, state_dir=state_dir, data_dir=data_dir)
    try:
        yield agent
    finally:
        agent.close()
        lab.remove_containers(docker_client, name)


@pytest.fixture(scope="module")
def shared(
    cli: Cli, cli_images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agent]:
    """The module's agent, serving dev and prod."""
    with running_agent(
        cli, cli_images, docker_client, tmp_path_factory.mktemp("agent"), environments=("dev", "prod")
    ) as agent:
        yield agent


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, registry: lab.Registry) -> Path:
    """A workspace whose plan renders to the lab registry and runs fast; plans/slow.yaml verifies for 4 s."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(REPO / "plans", ws / "plans")
    (ws / "infra").mkdir()
    table = (REPO / "infra" / "ENV_SCHEMA.md").read_text()
    (ws / "infra" / "ENV_SCHEMA.md").write_text(table)
    # A table that wrongly marks RUNTIME_LOG_LEVEL optional: the runtime then refuses to start.
    optional = table.replace("| `RUNTIME_LOG_LEVEL` | yes |", "| `RUNTIME_LOG_LEVEL` | no |")
    assert optional != table
    (ws / "infra" / "ENV_SCHEMA.optional.md").write_text(optional)
    plan = ws / "plans" / "runtime.yaml"
    text = plan.read_text()
    for old, new in (
        ("ghcr.io/", f"{registry.host}/"),
        ("stable_for: 5", "stable_for: 1"),
        ("stop_timeout: 30", "stop_timeout: 2"),
    ):
        assert old in text
        text = text.replace(old, new)
    plan.write_text(text)
    (ws / "plans" / "slow.yaml").write_text(text.replace("stable_for: 1", "stable_for: 4"))
    (ws / "plans" / "broken.yaml").write_text(text.replace("action: stop_remove", "action: restart"))
    return ws


@pytest.fixture(scope="module")
def deployed(cli: Cli, ws: Path, shared: Agent) -> subprocess.CompletedProcess[str]:
    """dev on the shared agent runs 1.0.0, deployed through the CLI."""
    return cli.run(*apply_args(shared, "dev", "1.0.0"), cwd=ws, env=operator_env(shared))


def _finished_deployment() -> dict[str, Any]:
    step = {"state": "succeeded", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}
    return {
        "id": "0123456789ab",
        "state": "succeeded",
        "digest": "sha256:" + "0" * 64,
        "steps": [{"action": action, "name": name, **step} for action, name in STEPS],
        "error": None,
        "logs": [],
    }


class _Impostor(BaseHTTPRequestHandler):
    """What answers instead of the agent: Cloudflare Access (a redirect to its login page, or an HTML page), or,
    under /status-down/, an agent whose deploy succeeds and whose /v1/status then fails (the real one cannot be
    made to do that on cue)."""

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "https://acme.cloudflareaccess.com/cdn-cgi/access/login/deploy.example.com")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/status-down/v1/deploy":
            self.send(202, "application/json", json.dumps({"deployment_id": "0123456789ab"}).encode())
        elif self.path.split("?")[0] == "/status-down/v1/deployments/0123456789ab":  # a long poll or not
            self.send(200, "application/json", json.dumps(_finished_deployment()).encode())
        elif self.path.startswith("/status-down/"):
            error = {"code": "docker_unavailable", "message": "Docker is unreachable", "details": []}
            self.send(503, "application/json", json.dumps({"error": error}).encode())
        else:
            html = b"<!DOCTYPE html><html><body>Sign in with Cloudflare Access</body></html>"
            self.send(200, "text/html; charset=utf-8", html)

    def send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def impostor() -> Iterator[str]:
    """The base URL of a tiny local server that answers like Cloudflare Access does."""
    server = ThreadingHTTPServer(("127.0.0.1", lab.free_port()), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


# -- helpers


def plan_args(env: str, tag: str, *extra: str, plan: str = "plans/runtime.yaml") -> list[str]:
    return [plan, "--env", env, "--tag", tag, "--repository", REPOSITORY, *extra]


def apply_args(agent: Agent, env: str, tag: str, *extra: str, plan: str = "plans/runtime.yaml") -> list[str]:
    return ["apply", *plan_args(env, tag, "--agent", agent.url, *extra, plan=plan)]


def operator_env(agent: Agent, runtime: dict[str, str] = RUNTIME_ENV, **extra: str) -> dict[str, str]:
    return {**runtime, "DEPLOY_AGENT_TOKEN": agent.token, **extra}


def deployment_id(stdout: str) -> str:
    found = re.search(r"^deployment (\S+) accepted$", stdout, re.MULTILINE)
    assert found, stdout
    return found.group(1)


def step_patterns(*, last: str = "succeeded") -> list[str]:
    """The eight step lines of a deploy whose steps all succeed but the last, which ends `last`."""
    patterns = []
    for number, (action, name) in enumerate(STEPS, start=1):
        title = re.escape(f"[{number}/4] {action}: {name}")
        state = last if number == 4 else "succeeded"
        patterns += [rf"{title} \.\.\.", rf"{title}: {state} in \d+\.\d s( \(.+\))?"]
    return patterns


def step_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"\[\d/4\] ", line)]


def assert_lines_match(lines: list[str], patterns: list[str]) -> None:
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def snapshot(agent: Agent) -> tuple[int, dict[str, Any]]:
    """What a refused command must leave as it was: the audit log's length and each last deployment."""
    environments = agent.get("/v1/status").json()["environments"]
    return len(agent.audit()), {name: env["last_deployment"] for name, env in environments.items()}


def containers(client: docker.DockerClient) -> dict[str, tuple[str, str]]:
    found = client.containers.list(all=True, filters={"name": PREFIX})
    return {c.name: (c.id, c.status) for c in found if c.name}


def assert_plain_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# -- apply


def test_apply_deploys_follows_the_steps_and_verifies(
    deployed: subprocess.CompletedProcess[str], shared: Agent, cli_images: Images, docker_client: docker.DockerClient
) -> None:
    assert deployed.returncode == 0, deployed.stderr
    ref, digest = cli_images.ref("1.0.0"), cli_images.digests["1.0.0"]
    lines = deployed.stdout.splitlines()
    assert lines[0] == f"deploying {ref} to dev through {shared.url}"
    assert lines[1] == f"deployment {deployment_id(deployed.stdout)} accepted"
    assert_lines_match(step_lines(deployed.stdout), step_patterns())
    assert lines[-1] == f"deployed and verified: dev runs {ref} ({digest})"
    assert CANARY not in deployed.stdout + deployed.stderr
    container = docker_client.containers.get(shared.containers["dev"])
    assert (container.status, container.attrs["Config"]["Image"]) == ("running", ref)


def test_a_runtime_that_refuses_to_start_fails_apply_with_its_own_log_lines(
    cli: Cli, ws: Path, shared: Agent, docker_client: docker.DockerClient
) -> None:
    env = operator_env(shared, PROD_ENV)
    del env["RUNTIME_LOG_LEVEL"]
    result = cli.run(
        *apply_args(shared, "prod", "1.0.1", "--confirm", "prod:1.0.1", "--env-schema", "infra/ENV_SCHEMA.optional.md"),
        cwd=ws,
        env=env,
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert re.fullmatch(r"deploy failed: prod 1\.0\.1: failed in step verify: .+\n", result.stderr), result.stderr
    assert_lines_match(step_lines(result.stdout), step_patterns(last="failed"))
    lines = result.stdout.splitlines()
    header = [n for n, line in enumerate(lines) if re.fullmatch(r"the container's last \d+ log lines:", line)]
    assert len(header) == 1, lines
    tail = lines[header[0] + 1 :]
    assert tail and all(line.startswith("  | runtime: ") for line in tail), tail
    # The restart policy may have restarted it a few times: any tail holds the refusal.
    assert "  | runtime: refusing to start: missing RUNTIME_LOG_LEVEL" in tail
    assert "deployed and verified" not in result.stdout
    assert docker_client.containers.get(shared.containers["prod"]).status == "exited"


REFUSED_LOCALLY = [
    pytest.param(
        "dev",
        "1.0.1",
        [],
        ["RUNTIME_LOG_LEVEL", "RUNTIME_API_TOKEN"],
        "plans/runtime.yaml",
        "environment: required variables not set in the environment: RUNTIME_LOG_LEVEL, RUNTIME_API_TOKEN "
        "(listed in infra/ENV_SCHEMA.md)",
        id="missing-variables",
    ),
    pytest.param(
        "prod",
        "1.0.1",
        [],
        [],
        "plans/runtime.yaml",
        "error: a prod deploy needs --confirm prod:1.0.1 (given: nothing); nothing was sent",
        id="prod-without-confirm",
    ),
    pytest.param(
        "prod",
        "1.0.1",
        ["--confirm", "prod:1.0.0"],
        [],
        "plans/runtime.yaml",
        "error: a prod deploy needs --confirm prod:1.0.1 (given: prod:1.0.0); nothing was sent",
        id="prod-wrong-confirm",
    ),
    pytest.param(
        "dev",
        "latest",
        [],
        [],
        "plans/runtime.yaml",
        "--tag: 'latest': tag must be a full 40-hex commit SHA or a semantic version",
        id="tag-latest",
    ),
    pytest.param(
        "dev",
        "v1.0.1",
        [],
        [],
        "plans/runtime.yaml",
        "--tag: 'v1.0.1': tag must be a full 40-hex commit SHA or a semantic version",
        id="tag-v-prefixed",
    ),
    pytest.param(
        "dev",
        "1.0.1",
        [],
        [],
        "plans/broken.yaml",
        "plans/broken.yaml:10:13: steps[1].action: step 2 must be 'stop_remove'",
        id="bad-plan",
    ),
]


@pytest.mark.parametrize(("env", "tag", "extra", "unset", "plan", "message"), REFUSED_LOCALLY)
def test_invalid_input_exits_2_and_sends_nothing(
    cli: Cli,
    ws: Path,
    shared: Agent,
    env: str,
    tag: str,
    extra: list[str],
    unset: list[str],
    plan: str,
    message: str,
) -> None:
    before = snapshot(shared)
    runtime = PROD_ENV if env == "prod" else RUNTIME_ENV
    variables = {k: v for k, v in operator_env(shared, runtime).items() if k not in unset}
    result = cli.run(*apply_args(shared, env, tag, *extra, plan=plan), cwd=ws, env=variables)

    assert_plain_error(result, 2, message)
    assert result.stdout == ""
    assert snapshot(shared) == before


@pytest.mark.parametrize(
    ("env", "override", "message"),
    [
        pytest.param(
            "dev",
            {"RUNTIME_ENV": "prod"},
            "infra/ENV_SCHEMA.md:15:30: RUNTIME_ENV: the value 'prod' breaks the rule 'environment': must be 'dev'",
            id="value-for-another-environment",
        ),
        pytest.param(
            "prod",
            {"RUNTIME_API_TOKEN": "too-short"},
            "RUNTIME_API_TOKEN: the value (secret, not shown) breaks the rule 'at least 16 characters'",
            id="token-the-runtime-rejects",
        ),
    ],
)
def test_a_value_the_runtime_would_reject_stops_the_deploy_before_the_stop(
    cli: Cli, ws: Path, shared: Agent, env: str, override: dict[str, str], message: str
) -> None:
    """Issue 18: these values passed every check and failed only after the old container was stopped."""
    before = snapshot(shared)
    variables = operator_env(shared, PROD_ENV if env == "prod" else RUNTIME_ENV, **override)
    confirm = ["--confirm", "prod:1.0.1"] if env == "prod" else []
    result = cli.run(*apply_args(shared, env, "1.0.1", *confirm), cwd=ws, env=variables)

    assert_plain_error(result, 2, message)
    assert "too-short" not in result.stdout + result.stderr
    assert snapshot(shared) == before


def test_variables_not_in_the_table_are_never_sent(
    cli: Cli, ws: Path, shared: Agent, docker_client: docker.DockerClient
) -> None:
    env = operator_env(shared, PROD_ENV, RUNTIME_EXTRA="x", NOT_LISTED="y", DEPLOY_AGENT_URL=shared.url)
    result = cli.run("apply", *plan_args("prod", "1.0.0", "--confirm", "prod:1.0.0"), cwd=ws, env=env)

    assert result.returncode == 0, (result.stdout, result.stderr)
    sent = ["RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL"]
    container = docker_client.containers.get(shared.containers["prod"])
    names = sorted(item.split("=", 1)[0] for item in container.attrs["Config"]["Env"])
    assert [n for n in names if n.startswith("RUNTIME_") or n == "NOT_LISTED"] == sent
    started = [r for r in shared.audit() if r["event"] == "deployment_started"]
    assert started[-1]["deployment_id"] == deployment_id(result.stdout)
    assert started[-1]["env_names"] == sent


# -- the agent cannot be reached, or something else answers


def _agent_url(fault: str, shared: Agent, impostor: str) -> str:
    return {
        "unreachable": f"http://127.0.0.1:{lab.free_port()}",
        "wrong-token": shared.url,
        "html": f"{impostor}/html",
        "redirect": f"{impostor}/redirect",
    }[fault]


FAULT_MESSAGES = {
    "unreachable": ["cannot reach the agent at http://127.0.0.1:", "Connection refused"],
    "wrong-token": ["the agent refused (401 unauthorized)"],
    "html": ["answered 200 with text/html, not JSON", "Cloudflare Access", "service token"],
    "redirect": [
        "answered with a redirect (302 to https://acme.cloudflareaccess.com/cdn-cgi/access/login/deploy.example.com)",
        "Cloudflare Access",
        "service token",
    ],
}
# Only an answer that may come from behind the agent leaves the deploy in doubt; a refused connection or a
# redirect in front of it did not deliver it.
IN_DOUBT = "the deploy may or may not have been accepted"


@pytest.mark.parametrize("fault", list(FAULT_MESSAGES))
@pytest.mark.parametrize("command", ["apply", "status", "dry-run"])
def test_an_agent_that_cannot_be_used_exits_3_with_a_plain_message(
    cli: Cli, ws: Path, shared: Agent, impostor: str, command: str, fault: str
) -> None:
    before = snapshot(shared)
    url = _agent_url(fault, shared, impostor)
    env = operator_env(shared, DEPLOY_AGENT_TOKEN="not-the-token" if fault == "wrong-token" else shared.token)
    args = {
        "apply": ["apply", *plan_args("dev", "1.0.1", "--agent", url)],
        "status": ["status", "--agent", url],
        "dry-run": ["dry-run", *plan_args("dev", "1.0.1", "--agent", url)],
    }[command]
    result = cli.run(*args, cwd=ws, env=env)

    assert_plain_error(result, 3, *FAULT_MESSAGES[fault])
    assert result.stderr.startswith("error: ")
    assert (IN_DOUBT in result.stderr) == (command == "apply" and fault == "html")
    assert CANARY not in result.stdout + result.stderr
    assert snapshot(shared) == before


def test_a_deploy_that_cannot_be_verified_exits_1_not_3(cli: Cli, ws: Path, impostor: str) -> None:
    url = f"{impostor}/status-down"
    result = cli.run("apply", *plan_args("dev", "1.0.1", "--agent", url), cwd=ws, env={**RUNTIME_ENV})

    assert_plain_error(
        result,
        1,
        "deploy failed: the deploy finished but /v1/status could not be read to verify it: "
        "the agent refused (503 docker_unavailable): Docker is unreachable",
    )
    assert "deployed and verified" not in result.stdout


# -- GitHub Actions


def _github_env(shared: Agent, summary: Path, **extra: str) -> dict[str, str]:
    return operator_env(shared, PROD_ENV, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), **extra)


def _workflow_commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("::")]


def _groups() -> list[str]:
    """`::group::` and `::endgroup::` around each of the four steps."""
    titles = [f"[{number}/4] {action}: {name}" for number, (action, name) in enumerate(STEPS, start=1)]
    return [line for title in titles for line in (f"::group::{title}", "::endgroup::")]


GITHUB_RUN = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/trader",
    "GITHUB_RUN_ID": "777",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_ACTOR": "ci-bot",
    "GITHUB_TRIGGERING_ACTOR": "octocat",
    "GITHUB_SHA": "c0ffee" * 6 + "c0ff",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_WORKFLOW": "Deploy",
}


def test_github_mode_masks_first_groups_each_step_and_writes_the_summary(
    cli: Cli, ws: Path, shared: Agent, cli_images: Images, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    result = cli.run(
        *apply_args(shared, "prod", "1.0.0", "--confirm", "prod:1.0.0"),
        cwd=ws,
        env=_github_env(shared, summary, **GITHUB_RUN),
    )

    assert result.returncode == 0, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"::add-mask::{CANARY}"
    assert output.count(CANARY) == 1
    assert _workflow_commands(result.stdout) == [f"::add-mask::{CANARY}", *_groups()]
    text = summary.read_text()
    assert CANARY not in text
    for row in (
        "| environment | `prod` |",
        "| tag | `1.0.0` |",
        f"| digest | `{cli_images.digests['1.0.0']}` |",
        "| actor | `token` for `octocat` (claimed) |",
        f"| deployment id | `{deployment_id(result.stdout)}` |",
        "| result | **succeeded** |",
        "| verified through /v1/status | yes |",
    ):
        assert row in text.splitlines(), text
    for action, name in STEPS:
        assert re.search(rf"^\| {action} \| {name} \| succeeded \| \d+\.\d s \|", text, re.MULTILINE), text
    # Where it was started: the run (with its attempt) and who clicked Deploy, beside the authenticated actor.
    run_url = "https://github.com/acme/trader/actions/runs/777/attempts/2"
    assert f"| workflow run | {run_url} |" in text.splitlines()
    deployment = shared.get(f"/v1/deployments/{deployment_id(result.stdout)}").json()
    assert deployment["actor"] == "token"
    assert deployment["origin"] == {
        "run_url": run_url,
        "actor": "octocat",
        "repository": "acme/trader",
        "sha": GITHUB_RUN["GITHUB_SHA"],
        "ref": "refs/heads/main",
        "workflow": "Deploy",
        "verified": False,  # the workflow's own account: this agent runs with DEPLOY_AGENT_GITHUB_OIDC=off
    }
    started = [
        r for r in shared.audit() if r["event"] == "deployment_started" and r["deployment_id"] == deployment["id"]
    ]
    assert started[0]["origin"] == deployment["origin"]
    # The audit head leaves the server: in the job log and the summary, and it anchors a later verify.
    head = f"{deployment['audit_head']['seq']}:{deployment['audit_head']['hash']}"
    assert f"audit head {head} " in result.stdout
    assert f"| audit head | `{head}` |" in text.splitlines()
    verify = cli.run("audit", "verify", str(shared.state_dir / "audit.jsonl"), "--anchor", head, cwd=ws)
    assert verify.returncode == 0 and "1 anchor(s) match" in verify.stdout


def test_github_mode_failure_is_an_error_annotation_with_the_log_tail_in_the_summary(
    cli: Cli, ws: Path, shared: Agent, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    # The runner unescapes a command's data: a secret holding `%25` or `%0A` must be masked as itself.
    secret = f"{CANARY}%0A%25"
    result = cli.run(
        *apply_args(shared, "prod", "1.0.1", "--confirm", "prod:1.0.1", plan="plans/slow.yaml"),
        cwd=ws,
        env=_github_env(shared, summary, RUNTIME_FAULT="crash-after-2s", RUNTIME_API_TOKEN=secret),
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"::add-mask::{CANARY}%250A%2525"
    assert output.count(CANARY) == 1
    commands = _workflow_commands(result.stdout)
    assert commands[:-1] == [f"::add-mask::{CANARY}%250A%2525", *_groups()]
    assert re.fullmatch(r"::error::prod 1\.0\.1: failed in step verify: .+", commands[-1])
    assert "  | runtime: fault rehearsal: crashing (RUNTIME_FAULT=crash-after-2s)" in result.stdout.splitlines()
    text = summary.read_text()
    assert CANARY not in text
    assert "| result | **failed** |" in text.splitlines()
    assert "| verified through /v1/status | no |" in text.splitlines()
    assert re.search(r"^\| verify \| .+ \| failed \| \d+\.\d s \|", text, re.MULTILINE), text
    assert "**Failed in `verify`:**" in text
    assert "runtime: fault rehearsal: crashing (RUNTIME_FAULT=crash-after-2s)" in text.splitlines()


# -- SIGINT


def _process_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment `Cli.run` gives the CLI."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_", "CF_ACCESS_"))}
    return {**base, **extra}


def _sigint_as_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_following_and_the_deploy_goes_on_at_the_agent(
    cli: Cli, ws: Path, shared: Agent, cli_images: Images, sig: signal.Signals
) -> None:
    args = apply_args(shared, "prod", "1.0.1", "--confirm", "prod:1.0.1", plan="plans/slow.yaml")
    with subprocess.Popen(
        [str(cli.bin_dir / "deployplan"), *args],
        cwd=ws,
        env=_process_env(operator_env(shared, PROD_ENV)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal or a cancelled job would: a suite started in the background (`cmd &` without job
        # control) ignores SIGINT, and Python keeps an ignored SIGINT ignored.
        preexec_fn=_sigint_as_default,
    ) as process:
        watchdog = threading.Timer(60, process.kill)  # a hung CLI fails the test instead of hanging it
        watchdog.start()
        try:
            seen = []
            assert process.stdout is not None
            for line in process.stdout:
                seen.append(line)
                if line.startswith("[4/4] verify: ") and line.rstrip().endswith(" ..."):
                    break
            else:
                pytest.fail(f"the CLI ended before step 4 started: {''.join(seen)}")
            process.send_signal(sig)
            rest, stderr = process.communicate(timeout=30)
        finally:
            watchdog.cancel()

    stdout = "".join(seen) + rest
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    found = deployment_id(stdout)
    assert f"stopped following; deployment {found} goes on at the agent. Follow it with" in stderr
    assert f"  deployplan status --agent {shared.url} --env prod" in stderr.splitlines()
    assert "deployed and verified" not in stdout
    finished = shared.wait(found, timeout=60)
    assert finished["state"] == "succeeded", finished
    prod = shared.get("/v1/status?env=prod").json()["environments"]["prod"]
    assert (prod["state"], prod["image"]) == ("running", cli_images.ref("1.0.1"))


# -- status


def test_status_shows_a_row_per_environment(
    cli: Cli, ws: Path, shared: Agent, deployed: subprocess.CompletedProcess[str], cli_images: Images
) -> None:
    result = cli.run("status", "--agent", shared.url, cwd=ws, env=operator_env(shared))

    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agent ") and "docker reachable, audit ok, deploy in progress: none" in lines[0]
    assert lines[1].split() == [
        "ENV", "CONTAINER", "STATE", "IMAGE", "DIGEST", "STARTED", "RESTARTS", "LAST", "DEPLOYMENT",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["dev", "prod"]
    assert rows["dev"][1:4] == [shared.containers["dev"], "running", cli_images.ref("1.0.0")]
    assert deployment_id(deployed.stdout) in rows["dev"]
    assert rows["prod"][1] == shared.containers["prod"]


def test_status_json_has_the_contract_shape(
    cli: Cli, ws: Path, shared: Agent, deployed: subprocess.CompletedProcess[str], cli_images: Images
) -> None:
    result = cli.run("status", "--json", "--agent", shared.url, cwd=ws, env=operator_env(shared))

    assert (result.returncode, result.stderr) == (0, "")
    status = json.loads(result.stdout)
    assert {"version", "docker", "audit", "deploy_in_progress"} <= set(status["agent"])
    assert sorted(status["environments"]) == ["dev", "prod"]
    for entry in status["environments"].values():
        assert {"container", "state", "image", "digest", "started_at", "restart_count", "last_deployment"} <= set(entry)
    dev = status["environments"]["dev"]
    assert (dev["state"], dev["image"], dev["digest"]) == (
        "running",
        cli_images.ref("1.0.0"),
        cli_images.digests["1.0.0"],
    )
    assert {"id", "state", "tag", "finished_at"} <= set(dev["last_deployment"])
    assert (dev["last_deployment"]["id"], dev["last_deployment"]["tag"]) == (deployment_id(deployed.stdout), "1.0.0")


def test_status_env_narrows_to_one_environment(
    cli: Cli, ws: Path, shared: Agent, deployed: subprocess.CompletedProcess[str]
) -> None:
    table = cli.run("status", "--env", "dev", "--agent", shared.url, cwd=ws, env=operator_env(shared))
    answer = cli.run("status", "--env", "dev", "--json", "--agent", shared.url, cwd=ws, env=operator_env(shared))

    assert (table.returncode, answer.returncode) == (0, 0), table.stderr + answer.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[2:]] == ["dev"]
    assert list(json.loads(answer.stdout)["environments"]) == ["dev"]


# -- dry-run against the agent


def test_dry_run_with_the_agent_shows_the_server_side_and_the_change_touching_nothing(
    cli: Cli,
    ws: Path,
    shared: Agent,
    deployed: subprocess.CompletedProcess[str],
    cli_images: Images,
    docker_client: docker.DockerClient,
) -> None:
    before, docker_before = snapshot(shared), containers(docker_client)
    result = cli.run("dry-run", *plan_args("dev", "1.0.1", "--agent", shared.url), cwd=ws, env=operator_env(shared))

    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    lines = result.stdout.splitlines()
    name, old, new = shared.containers["dev"], cli_images.ref("1.0.0"), cli_images.ref("1.0.1")
    assert lines[:8] == [
        f"the agent would deploy {new} to dev:",
        f"  container       {name} (server-owned)",
        f"  volumes         {shared.data_dir}:/var/lib/runtime:rw (server-owned)",
        "  restart policy  unless-stopped (server-owned)",
        "  variables",
        "    RUNTIME_API_TOKEN=****",
        "    RUNTIME_ENV=dev",
        "    RUNTIME_LOG_LEVEL=info",
    ]
    assert lines[8] == "actions, in order:"
    assert [line.split()[:2] for line in lines[9:13]] == [
        ["1.", "pull"],
        ["2.", "stop_remove"],
        ["3.", "start"],
        ["4.", "verify"],
    ]
    assert lines[13] == "change against what runs now:"
    assert lines[14].startswith(f"- {name} running {old} ({cli_images.digests['1.0.0']})")
    assert lines[15] == f"+ {name} running {new}"
    # The registry was asked with the server's credentials (nothing pulled): it names the digest the pull will get.
    assert lines[16:] == [
        f"registry        has {new} ({cli_images.digests['1.0.1']})",
        "may deploy      yes (this caller, to dev)",
        "nothing was touched (dry run)",
    ]
    assert CANARY not in result.stdout
    assert (snapshot(shared), containers(docker_client)) == (before, docker_before)


def test_dry_run_refused_by_the_agent_exits_3(
    cli: Cli, ws: Path, cli_images: Images, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    with running_agent(cli, cli_images, docker_client, tmp_path, environments=("dev",)) as dev_only:
        result = cli.run(
            "dry-run",
            *plan_args("prod", "1.0.1", "--agent", dev_only.url),
            cwd=ws,
            env=operator_env(dev_only, PROD_ENV),
        )

    assert_plain_error(
        result,
        3,
        "error: the agent refused (422 plan_refused)",
        "  $.environment: this agent does not serve 'prod' (it serves dev)",
    )
    assert result.stdout == ""


def test_dry_run_of_a_tag_the_registry_lacks_exits_3_touching_nothing(
    cli: Cli, ws: Path, shared: Agent, cli_images: Images, docker_client: docker.DockerClient
) -> None:
    """Found in issue 18: a tag the registry lacks was found only by the pull of the real deploy, after prod's
    reviewers approved. The dry run asks the registry now, with the server's credentials, pulling nothing."""
    before, docker_before = snapshot(shared), containers(docker_client)
    images_before = sorted(tag for image in docker_client.images.list() for tag in image.tags)
    result = cli.run("dry-run", *plan_args("dev", "9.9.9", "--agent", shared.url), cwd=ws, env=operator_env(shared))

    assert result.returncode == 3, result.stdout + result.stderr
    missing = cli_images.ref("9.9.9")
    assert f"registry        NOT FOUND: the registry does not give {missing}: " in result.stdout
    assert "may deploy      yes (this caller, to dev)" in result.stdout
    assert result.stderr.startswith(f"error: a deploy of {missing} would not go through: the registry does not have it")
    assert result.stderr.rstrip().endswith("nothing was touched")
    answer = shared.post({"plan": plan_data(cli_images, "9.9.9"), "env": RUNTIME_ENV, "dry_run": True}).json()
    assert answer["registry"]["found"] is False and "manifest unknown" in answer["registry"]["reason"]
    assert (snapshot(shared), containers(docker_client)) == (before, docker_before)
    assert sorted(tag for image in docker_client.images.list() for tag in image.tags) == images_before


def test_apply_with_a_mount_source_gone_is_refused_exit_3_touching_nothing(
    cli: Cli, ws: Path, cli_images: Images, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """The agent checks the mount sources again before the pull: apply says which one, nothing is touched. The
    two commands run before a deploy say so first (found in review: `dry-run --agent` exited 0, "would deploy",
    and `check --tag` said ready)."""
    with running_agent(cli, cli_images, docker_client, tmp_path, environments=("dev",)) as dev_only:
        dev_only.data_dir.rmdir()
        dry = cli.run(
            "dry-run", *plan_args("dev", "1.0.1", "--agent", dev_only.url), cwd=ws, env=operator_env(dev_only)
        )
        check_args = ("--env", "dev", "--tag", "1.0.1", "--agent", dev_only.url, "--repository", REPOSITORY)
        checked = cli.run("check", *check_args, cwd=ws, env=operator_env(dev_only))
        assert dev_only.audit() == []  # a dry run is a question: not audited
        result = cli.run(*apply_args(dev_only, "dev", "1.0.1"), cwd=ws, env=operator_env(dev_only))
        audit = dev_only.audit()

    gone = f"DEPLOY_AGENT_VOLUMES_DEV: the mount source {dev_only.data_dir} does not exist"
    assert_plain_error(
        dry,
        3,
        "error: the agent refused (503 server_not_ready): the server is not ready to deploy dev: 1 mount source(s) "
        "missing; nothing was touched",
        f"  {gone}",
    )
    assert "would deploy" not in dry.stdout
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert (
        "FAIL  dry run: the agent refused (503 server_not_ready): the server is not ready to deploy dev"
        in checked.stdout
    )
    assert f"; {gone}; create it, owned by the runtime's user" in checked.stdout
    assert "change: on the server, create each missing mount source of DEPLOY_AGENT_VOLUMES_DEV" in checked.stdout
    assert_plain_error(
        result,
        3,
        "error: the agent refused (503 server_not_ready): the server is not ready to deploy dev: 1 mount source(s) "
        "missing; nothing was touched",
        f"  DEPLOY_AGENT_VOLUMES_DEV: the mount source {dev_only.data_dir} does not exist",
    )
    assert [r["event"] for r in audit] == ["deploy_refused"]
    assert not dev_only.data_dir.exists()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(dev_only.containers["dev"])


def test_dry_run_with_a_local_problem_exits_2_before_asking(cli: Cli, ws: Path, shared: Agent) -> None:
    before = snapshot(shared)
    env = {k: v for k, v in operator_env(shared).items() if k != "RUNTIME_ENV"}
    result = cli.run("dry-run", *plan_args("dev", "1.0.1", "--agent", shared.url), cwd=ws, env=env)

    assert_plain_error(result, 2, "required variables not set in the environment: RUNTIME_ENV")
    assert result.stdout == ""
    assert snapshot(shared) == before


# -- audit verify


def test_audit_verify_of_the_agents_log_is_intact(
    cli: Cli, ws: Path, shared: Agent, deployed: subprocess.CompletedProcess[str]
) -> None:
    path = shared.state_dir / "audit.jsonl"
    records = shared.audit()
    result = cli.run("audit", "verify", str(path), cwd=ws)

    head = f"{len(records)}:{records[-1]['hash']}"
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{path}: intact, {len(records)} records, head {head}\n",
        "",
    )


def test_audit_verify_names_the_first_broken_record(
    cli: Cli, ws: Path, shared: Agent, deployed: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    lines = (shared.state_dir / "audit.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["actor"] = "someone-else"
    lines[2] = json.dumps(record)
    copy = tmp_path / "audit.jsonl"
    copy.write_text("\n".join(lines) + "\n")
    result = cli.run("audit", "verify", str(copy), cwd=ws)

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith(f"{copy}: BROKEN at line 3 (seq 3): ")
    assert "Traceback" not in result.stderr


def test_audit_verify_of_a_missing_file_exits_2(cli: Cli, ws: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "audit.jsonl"
    result = cli.run("audit", "verify", str(missing), cwd=ws)

    assert_plain_error(result, 2, f"error: {missing}: no such audit log")
