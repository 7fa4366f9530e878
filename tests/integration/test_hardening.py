"""What an attacker with a valid identity, and a crash, did to the agent before: each against the real agent under
gunicorn and real Docker, with nothing touched and nothing leaked."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

import lab
from realparts import CANARY, PREFIX, REPO, RUNTIME_ENV, Agent, AgentFactory, Cli, Images, agent_env, plan_data

# -- a healthcheck that prints the secret


@pytest.fixture(scope="module")
def leaky_tag(images: Images, docker_client: docker.DockerClient) -> Iterator[str]:
    """The example runtime with a healthcheck that prints the API token (and a multi-line secret) and fails."""
    tag = "6.6.6"
    dockerfile = (
        f"FROM {images.ref('1.0.0')}\n"
        'HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD ["/bin/sh", "-c", '
        '"echo checking with $RUNTIME_API_TOKEN; echo \\"$RUNTIME_KEY\\"; exit 1"]\n'
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    context.seek(0)
    docker_client.images.pull(images.repository, tag="1.0.0")
    docker_client.images.build(fileobj=context, custom_context=True, tag=images.ref(tag), rm=True)
    lab.push(docker_client, images.ref(tag))
    lab.remove_images(docker_client, images.ref(tag))
    yield tag


def test_a_healthcheck_that_prints_the_secret_is_masked_everywhere(
    agent: Agent, images: Images, leaky_tag: str, cli: Cli, tmp_path: Path
) -> None:
    """Found in review: a failing healthcheck's output reached the step message, the deployment's error, the audit
    log, the agent's log, apply's last line and the job summary unmasked. The first deploy goes through `apply` in
    GitHub mode, so every one of them is looked at; a multi-line secret sent straight to the agent
    is refused (a value holds no control characters), and the second deploy goes straight to the agent."""
    (tmp_path / "plans").mkdir()
    (tmp_path / "infra").mkdir()
    plan = (REPO / "plans" / "runtime.yaml").read_text("utf-8")
    for old, new in (
        ("ghcr.io/{{ repository }}/runtime", images.repository),
        ("stop_timeout: 30", "stop_timeout: 2"),
        ("stable_for: 5", "stable_for: 2"),
        ("timeout: 60", "timeout: 15"),
    ):
        assert old in plan
        plan = plan.replace(old, new)
    (tmp_path / "plans" / "runtime.yaml").write_text(plan, "utf-8")
    (tmp_path / "infra" / "ENV_SCHEMA.md").write_text((REPO / "infra" / "ENV_SCHEMA.md").read_text("utf-8"))
    summary = tmp_path / "summary.md"
    env = {
        **RUNTIME_ENV,
        "DEPLOY_AGENT_TOKEN": agent.token,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }

    result = cli.run(
        "apply", "plans/runtime.yaml", "--env", "dev", "--tag", leaky_tag, "--agent", agent.url, cwd=tmp_path, env=env
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("deploy failed: dev 6.6.6: failed in step verify: ") and "checking with ****" in last
    masks = [line for line in result.stdout.splitlines() if line.startswith("::add-mask::")]
    assert masks == [f"::add-mask::{RUNTIME_ENV['RUNTIME_API_TOKEN']}"]  # the runner is told first
    assert (result.stdout + result.stderr).count(CANARY) == 1, result.stdout + result.stderr  # and only there
    assert "checking with ****" in summary.read_text("utf-8") and CANARY not in summary.read_text("utf-8")
    found = re.search(r"^deployment (\S+) accepted$", result.stdout, re.MULTILINE)
    assert found is not None, result.stdout
    through_apply = agent.get(f"/v1/deployments/{found.group(1)}").json()

    # A multi-line value is refused before anything is touched (no control characters in a value, newlines
    # included), and the refusal names the variable without showing it.
    key = f"-----BEGIN KEY-----\n{CANARY}-line-two\n-----END KEY-----"
    refused = agent.post({"plan": plan_data(images, leaky_tag), "env": {**RUNTIME_ENV, "RUNTIME_KEY": key}})
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["path"] == "$.env.RUNTIME_KEY"
    direct = agent.deploy(plan_data(images, leaky_tag, stable_for=2, verify_timeout=15))

    for failed in (through_apply, direct):
        assert failed["state"] == "failed" and failed["error"]["step"] == "verify"
        assert "is unhealthy: checking with ****" in failed["error"]["message"], failed["error"]
    everything = json.dumps([through_apply, direct]) + refused.text + (agent.state_dir / "audit.jsonl").read_text()
    assert CANARY not in everything + agent.server.log_text()


# -- a crash in the middle of an append


def test_a_torn_last_line_is_set_aside_and_the_agent_boots(
    make_agent: AgentFactory, images: Images, tmp_path: Path, cli: Cli
) -> None:
    """Found in review: a crash mid-append left a torn line and the agent could not boot."""
    first = make_agent()
    response = first.post({"plan": plan_data(images, "1.0.0", stable_for=3), "env": RUNTIME_ENV})
    assert response.status_code == 202
    first.server.kill()  # a power cut during the deploy
    torn = b'{"seq": 999, "event": "step_succ'
    with (first.state_dir / "audit.jsonl").open("ab") as log:
        log.write(torn)  # and the append it was making, cut short

    second = make_agent(state_dir=first.state_dir)

    status = second.get("/v1/status").json()
    assert status["agent"]["audit"] == "ok", status
    records = second.audit()
    events = [r["event"] for r in records]
    assert "torn_tail_discarded" in events and events[-1] == "deployment_interrupted"
    kept = [p for p in first.state_dir.iterdir() if p.name.startswith("audit.torn-")]
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    verify = cli.run("audit", "verify", str(first.state_dir / "audit.jsonl"), cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert second.deploy(plan_data(images, "1.0.1", stable_for=0))["state"] == "succeeded"


# -- refusals that used to grow the log without bound, and a 500


def test_refusals_record_a_bounded_account(agent: Agent, images: Images) -> None:
    """Found in review: refused deploys copied unbounded env names into the audit log (250 MB in 7 s)."""
    body = {"plan": plan_data(images, "1.0.0"), "env": {f"BAD-{'x' * 2000}-{i}": "v" for i in range(120)}}
    before = agent.server.log_path.stat().st_size
    for _ in range(10):
        assert agent.post(body).status_code == 422
    assert (agent.state_dir / "audit.jsonl").stat().st_size < 10 * 12 * 1024
    assert agent.server.log_path.stat().st_size - before < 10 * 24 * 1024


@pytest.mark.parametrize(
    "raw",
    [
        '{"plan": %s, "env": {"\\ud800": "x"}}',
        '{"plan": %s, "env": {"RUNTIME_ENV": "dev"}, "origin": {"actor": "\\udcff"}}',
    ],
    ids=["env-name", "origin-actor"],
)
def test_a_lone_surrogate_is_a_refusal_with_its_audit_record(agent: Agent, images: Images, raw: str) -> None:
    """Found in review: a lone surrogate in an env name or the plan gave a 500 and no audit record."""
    body = raw % json.dumps(plan_data(images, "1.0.0"))
    response = agent.http.post(
        f"{agent.url}/v1/deploy", data=body, headers={**agent.headers(), "Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert agent.audit()[-1]["event"] == "deploy_refused"


# -- server settings that would hand the runtime the host


@pytest.mark.parametrize(
    ("volumes", "what"),
    [
        ("/var/run/docker.sock:/var/run/docker.sock", "the Docker socket"),
        ("STATE:/srv", "the agent's state directory (DEPLOY_AGENT_STATE_DIR)"),
    ],
)
def test_volumes_that_mount_the_socket_or_the_state_stop_the_agent(
    cli: Cli, images: Images, tmp_path: Path, volumes: str, what: str
) -> None:
    state = tmp_path / "state"
    env = agent_env(
        images,
        state_dir=state,
        containers={"dev": f"{PREFIX}-v-dev"},
        token="t" * 40,
        volumes=volumes.replace("STATE", str(state)),
    )
    result = subprocess.run([str(cli.bin_dir / "deploy-agent")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"would mount {what} into the runtime" in result.stderr
