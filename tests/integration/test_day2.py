"""Day-2 operations against the real parts: the runtime's logs, history, prune, metrics, a pull that never ends,
and clients that send their headers slowly (the agent under gunicorn, real Docker, a real registry, the CLI)."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import requests

import lab
from realparts import PREFIX, RUNTIME_ENV, Agent, AgentFactory, Cli, Images, plan_data

# -- the runtime's logs


def test_logs_come_from_the_container_masked_with_its_own_values(agent: Agent, images: Images, cli: Cli) -> None:
    # Nothing declared public: every value the request sent is a secret, RUNTIME_LOG_LEVEL's included, and the
    # example runtime prints its log level.
    deployed = agent.deploy(plan_data(images, "1.0.0", stable_for=0), public_env=[])
    assert deployed["state"] == "succeeded"

    answer = agent.get("/v1/logs/dev?tail=50").json()

    assert (answer["environment"], answer["state"], answer["truncated"]) == ("dev", "running", False)
    texts = [line["text"] for line in answer["lines"]]
    assert "runtime: configuration ok (env=****, log_level=****, api token set)" in texts, texts
    assert all(line["stream"] in ("stdout", "stderr") and line["time"] for line in answer["lines"])
    assert "info" not in json.dumps(answer)

    result = cli.run(
        "logs",
        "--env",
        "dev",
        "--tail",
        "5",
        "--agent",
        agent.url,
        cwd=agent.data_dir,
        env={"DEPLOY_AGENT_TOKEN": agent.token},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4 and "log_level=****" in result.stdout  # the runtime wrote 4


def test_the_since_filter_reaches_docker(agent: Agent, images: Images) -> None:
    agent.deploy(plan_data(images, "1.0.0", stable_for=0))
    assert agent.get("/v1/logs/dev?since=3600").json()["lines"]
    assert agent.get("/v1/logs/dev?since=2999-01-01T00:00:00Z").json()["lines"] == []


@pytest.fixture
def hostile_container(agent: Agent, images: Images, docker_client: docker.DockerClient) -> Iterator[str]:
    """Not a deploy: a container started by hand under the environment's name, that writes a 10 MB line and one
    full of terminal controls. The agent reads whatever container holds that name."""
    docker_client.images.pull(images.repository, tag="1.0.0")
    script = (
        "head -c 10485760 /dev/zero | tr '\\0' x; echo; "
        "printf '\\033]0;owned\\007\\033[2J<script>alert(1)</script>\\n'; "
        'echo "token=$HOSTILE_SECRET" >&2; sleep 60'
    )
    container = docker_client.containers.run(
        images.ref("1.0.0"),
        entrypoint=["/bin/sh", "-c", script],
        name=agent.containers["dev"],
        environment={"HOSTILE_SECRET": "hostile-secret-value"},
        user="65534:65534",
        detach=True,
    )
    try:
        deadline = time.monotonic() + 20
        while b"token=" not in container.logs(tail=5) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield agent.containers["dev"]
    finally:
        container.remove(force=True)


def test_a_10_mb_line_and_terminal_controls_hurt_neither_the_agent_nor_the_terminal(
    agent: Agent, hostile_container: str, cli: Cli
) -> None:
    response = agent.get("/v1/logs/dev?tail=5000")
    answer = response.json()
    assert response.status_code == 200 and len(response.content) < 1100 * 1024
    assert answer["truncated"] is True
    texts = [line["text"] for line in answer["lines"]]
    assert texts[0].startswith("x" * 16000) and texts[0].endswith("lines are kept to 16384 bytes]")
    assert "\x1b]0;owned\x07\x1b[2J<script>alert(1)</script>" in texts
    # A container the audit log does not know: every value of its environment is masked.
    assert "token=****" in texts and "hostile-secret-value" not in response.text

    result = cli.run(
        "logs", "--env", "dev", "--agent", agent.url, cwd=agent.data_dir, env={"DEPLOY_AGENT_TOKEN": agent.token}
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\\x1b]0;owned\\x07\\x1b[2J<script>" in result.stdout
    assert "[stderr] token=****" in result.stdout


def test_logs_without_a_container_and_unauthenticated(agent: Agent) -> None:
    assert agent.get("/v1/logs/prod").json() == {
        "environment": "prod",
        "container": agent.containers["prod"],
        "state": "absent",
        "lines": [],
        "truncated": False,
    }
    assert requests.get(f"{agent.url}/v1/logs/dev", timeout=10).status_code == 401


# -- history and metrics


def test_history_and_metrics_after_a_success_and_a_failure(agent: Agent, images: Images, cli: Cli) -> None:
    ok = agent.deploy(plan_data(images, "1.0.0", stable_for=0))
    bad = agent.deploy(plan_data(images, "1.0.1", stable_for=0), env={**RUNTIME_ENV, "RUNTIME_LOG_LEVEL": "loud"})
    assert (ok["state"], bad["state"]) == ("succeeded", "failed")

    listed = agent.get("/v1/deployments?env=dev&limit=5").json()["deployments"]
    assert [d["id"] for d in listed] == [bad["id"], ok["id"]]
    table = cli.run("history", "--agent", agent.url, cwd=agent.data_dir, env={"DEPLOY_AGENT_TOKEN": agent.token})
    assert table.returncode == 0, table.stderr
    assert f"{bad['id']}  dev  1.0.1  failed" in table.stdout and "verify: " in table.stdout

    response = agent.get("/v1/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    assert 'deployplan_deployments_total{environment="dev",state="succeeded"} 1.0' in text
    assert 'deployplan_deployments_total{environment="dev",state="failed"} 1.0' in text
    assert 'deployplan_runtime_up{environment="dev"} 0.0' in text  # the failed container was stopped
    assert 'deployplan_step_duration_seconds{environment="dev",step="verify"}' in text
    assert "deployplan_audit_intact 1.0" in text and "deployplan_docker_reachable 1.0" in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_both_workers_give_the_same_metrics(agent: Agent, images: Images) -> None:
    """The values come from the audit state and Docker at scrape time, not from a worker's memory: whichever of
    the two gunicorn workers answers a scrape, the numbers are the same."""
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    headers = agent.headers()

    def scrape(_: int) -> str:
        # A connection of its own each time, so both workers take their share.
        response = requests.get(agent.url + "/v1/metrics", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.text

    def served_by() -> set[int]:
        lines = (json.loads(line) for line in agent.server.log_path.read_text("utf-8").splitlines() if "{" in line)
        return {line["pid"] for line in lines if line.get("event") == "request" and line.get("path") == "/v1/metrics"}

    answers: set[str] = set()
    for _ in range(25):
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers.update(pool.map(scrape, range(8)))
        if len(served_by()) >= 2:
            break
    assert len(served_by()) == 2, "every scrape went to one worker"
    assert len(answers) == 1, "the workers disagree"
    assert 'deployplan_deployments_total{environment="dev",state="succeeded"} 1.0' in answers.pop()


# -- prune


@pytest.fixture
def prune_images(images: Images, registry: lab.Registry, docker_client: docker.DockerClient) -> Iterator[Images]:
    """Three tags with distinct digests under a repository of this test's own (prune removes what it names).

    Torn down whatever the fixture order: a container still using one of the images (the agent's, if it is torn
    down later) is removed first, since removing a used image's references only untags it and leaves it behind.
    """
    name = f"{PREFIX}-prune-{secrets.token_hex(2)}"
    repository = f"{registry.host}/{name}/runtime"
    digests: dict[str, str] = {}
    try:
        for tag in ("2.0.0", "2.0.1", "2.0.2"):
            lab.build_runtime_image(docker_client, f"{repository}:{tag}", label=f"{name}-{tag}")
            digests[tag] = lab.push(docker_client, f"{repository}:{tag}")
        lab.remove_images(docker_client, repository)
        yield Images(repository=repository, digests=digests)
    finally:
        labels = [f"deployplan.lab.variant={name}-{tag}" for tag in ("2.0.0", "2.0.1", "2.0.2")]
        ours = [image.id for label in labels for image in docker_client.images.list(all=True, filters={"label": label})]
        for container in docker_client.containers.list(all=True):
            if container.attrs["Image"] in ours:  # only this test's images: only its containers
                container.remove(force=True)
        lab.remove_images(docker_client, repository)
        lab.remove_images(docker_client, f"{registry.host}/{PREFIX}-mirror")
        left = [image.id for label in labels for image in docker_client.images.list(all=True, filters={"label": label})]
        assert left == [], f"images of this test left behind: {left}"


def _local(client: docker.DockerClient, repository: str) -> set[str]:
    return {ref for image in client.images.list() for ref in image.tags if ref.startswith(repository)}


def test_prune_keeps_what_runs_and_the_newest_and_only_touches_its_repository(
    make_agent: AgentFactory,
    prune_images: Images,
    docker_client: docker.DockerClient,
    registry: lab.Registry,
    cli: Cli,
) -> None:
    agent = make_agent(extra_env={"DEPLOY_AGENT_IMAGE_REPOSITORY": prune_images.repository})
    for tag in ("2.0.0", "2.0.1", "2.0.2"):
        assert agent.deploy(plan_data(prune_images, tag, stable_for=0))["state"] == "succeeded"
    mirror = f"{registry.host}/{PREFIX}-mirror/runtime:2.0.0"
    docker_client.images.get(prune_images.ref("2.0.0")).tag(mirror)  # another repository names 2.0.0 too
    repo = prune_images.repository
    operator = {"DEPLOY_AGENT_TOKEN": agent.token}

    listed = cli.run("prune", "--keep", "1", "--agent", agent.url, cwd=agent.data_dir, env=operator)
    assert listed.returncode == 0, listed.stderr
    assert f"keep {repo}:2.0.2: used by container {agent.containers['dev']}" in listed.stdout
    assert f"would remove {repo}:2.0.0" in listed.stdout and f"would remove {repo}:2.0.1" in listed.stdout
    assert "nothing was touched" in listed.stdout
    assert _local(docker_client, repo) == {f"{repo}:2.0.0", f"{repo}:2.0.1", f"{repo}:2.0.2"}

    pruned = cli.run("prune", "--keep", "1", "--yes", "--agent", agent.url, cwd=agent.data_dir, env=operator)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {repo}:2.0.1" in pruned.stdout and "freed" in pruned.stdout
    assert _local(docker_client, repo) == {f"{repo}:2.0.2"}
    assert mirror in docker_client.images.get(mirror).tags  # another repository's reference survives
    events = [r["event"] for r in agent.audit()]
    assert events[-2:] == ["prune_started", "prune_finished"]
    verify = cli.run("audit", "verify", str(agent.state_dir / "audit.jsonl"), cwd=agent.data_dir)
    assert verify.returncode == 0, verify.stderr

    # A pruned tag deploys again: it is pulled anew, with the digest it always had.
    again = agent.deploy(plan_data(prune_images, "2.0.1", stable_for=0))
    assert (again["state"], again["digest"]) == ("succeeded", prune_images.digests["2.0.1"])


def test_prune_during_a_deploy_is_409(agent: Agent, images: Images) -> None:
    response = agent.post({"plan": plan_data(images, "1.0.0", stable_for=4), "env": RUNTIME_ENV})
    assert response.status_code == 202
    try:
        busy = agent.http.post(
            f"{agent.url}/v1/prune", json={"keep": 1, "dry_run": False}, headers=agent.headers(), timeout=30
        )
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, "deploy_in_progress")
    finally:
        agent.wait(response.json()["deployment_id"])


# -- a registry that accepts the connection and then says nothing


def test_a_pull_from_a_registry_that_never_answers_ends_at_the_plans_timeout(make_agent: AgentFactory) -> None:
    """Found in review: the SDK's pull had no socket timeout, so a plan's 3 s became the engine's 25 s (or more)."""
    with lab.silent_registry() as port:
        silent = Images(repository=f"127.0.0.1:{port}/{PREFIX}-silent/runtime", digests={})
        agent = make_agent(extra_env={"DEPLOY_AGENT_IMAGE_REPOSITORY": silent.repository})
        plan = plan_data(silent, "1.0.0")
        plan["steps"][0]["timeout"] = 3
        started = time.monotonic()
        deployment = agent.deploy(plan)
        took = time.monotonic() - started

    assert deployment["state"] == "failed" and deployment["error"]["step"] == "pull"
    assert "did not finish within its timeout of 3 s" in deployment["error"]["message"]
    assert took < 10, took
    assert [s["state"] for s in deployment["steps"]] == ["failed", "skipped", "skipped", "skipped"]


# -- clients that send their headers slowly


def test_a_handful_of_slow_clients_do_not_starve_the_agent(agent: Agent) -> None:
    """Found in review: partial headers sent slowly from loopback held all 8 threads before authentication."""
    slow = []
    try:
        for _ in range(12):
            connection = socket.create_connection(("127.0.0.1", int(agent.url.rsplit(":", 1)[1])), timeout=5)
            connection.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
            slow.append(connection)
        time.sleep(1)
        for connection in slow:
            connection.sendall(b"X-Slow: 1\r\n")
        started = time.monotonic()
        for _ in range(5):
            assert agent.get("/v1/status").status_code == 200
        assert time.monotonic() - started < 5
    finally:
        for connection in slow:
            connection.close()


def test_deploy_agent_refuses_to_start_naming_every_problem(cli: Cli, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DEPLOY_AGENT_AUTH": "token", "DEPLOY_AGENT_TOKEN": "secret-token-value"}
    result = subprocess.run([str(cli.bin_dir / "deploy-agent")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "DEPLOY_AGENT_BIND is not set" in result.stderr and "DEPLOY_AGENT_RUNTIME_LOGS is not set" in result.stderr
    assert "secret-token-value" not in result.stderr + result.stdout


def test_deploy_agent_refuses_a_state_directory_others_may_write(cli: Cli, images: Images, tmp_path: Path) -> None:
    from realparts import agent_env

    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    env = agent_env(images, state_dir=state, containers={"dev": f"{PREFIX}-x-dev"}, token="t" * 40, volumes="none")
    result = subprocess.run([str(cli.bin_dir / "deploy-agent")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is writable by its group or by everyone (mode 0777)" in result.stderr
