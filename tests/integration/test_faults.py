"""The fault matrix, on real Docker: the agent killed at each step, Docker gone and back, no room for the audit log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from dockerproxy import DockerRelay

import lab
from realparts import PREFIX, RUNTIME_ENV, Agent, AgentFactory, Cli, Images, plan_data


def _wait_for_step(agent: Agent, deployment_id: str, step: str, *, timeout: float = 30) -> None:
    """Return the moment the audit log announces `step` of that deployment (written before the step runs)."""
    deadline = time.monotonic() + timeout
    path = agent.state_dir / "audit.jsonl"
    needles = ('"event":"step_started"', f'"step":"{step}"', f'"deployment_id":"{deployment_id}"')
    while not any(all(n in line for n in needles) for line in path.read_text().splitlines()):
        assert time.monotonic() < deadline, f"step {step} never started"
        time.sleep(0.002)


def _restart(agent: Agent) -> None:
    agent.server = lab.AgentServer(
        agent.server.env, log_path=agent.server.log_path, command=agent.server.command
    ).start()


@pytest.mark.parametrize("step", ["pull", "stop_remove", "start", "verify"])
def test_sigkill_at_each_step(
    make_agent: AgentFactory, images: Images, docker_client: docker.DockerClient, cli: Cli, step: str
) -> None:
    agent = make_agent()
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    response = agent.post({"plan": plan_data(images, "1.0.1", stable_for=20, verify_timeout=40), "env": RUNTIME_ENV})
    deployment_id = response.json()["deployment_id"]
    _wait_for_step(agent, deployment_id, step)
    agent.server.kill()
    _restart(agent)

    found = agent.get(f"/v1/deployments/{deployment_id}").json()
    assert found["state"] == "interrupted"
    reached = [s["action"] for s in found["steps"] if s["state"] != "pending" and s["state"] != "skipped"]
    assert step in reached
    verify = cli.run("audit", "verify", str(agent.state_dir / "audit.jsonl"), cwd=agent.state_dir)
    assert verify.returncode == 0, verify.stderr
    # No half-configured runtime: a container that exists is one that Docker created whole, from one deployment.
    for container in docker_client.containers.list(all=True, filters={"name": agent.containers["dev"]}):
        labels = container.attrs["Config"]["Labels"]
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"] if e.startswith("RUNTIME_"))
        assert env == RUNTIME_ENV
        assert labels["deployplan.tag"] in ("1.0.0", "1.0.1")
    # Nothing was resumed: no step record after the interruption.
    events = [r["event"] for r in agent.audit()]
    assert events[events.index("deployment_interrupted") + 1 :] == []
    again = agent.deploy(plan_data(images, "1.0.1", stable_for=0))
    assert again["state"] == "succeeded", again
    assert len(docker_client.containers.list(all=True, filters={"name": agent.containers["dev"]})) == 1


@pytest.fixture
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRelay]:
    # A short path: unix socket paths are limited to 107 bytes.
    relay = DockerRelay(tmp_path_factory.mktemp("relay") / "docker.sock").start()
    yield relay
    relay.stop()


def test_docker_gone_during_a_deploy_then_back(make_agent: AgentFactory, images: Images, relay: DockerRelay) -> None:
    agent = make_agent(extra_env={"DOCKER_HOST": relay.docker_host})
    response = agent.post({"plan": plan_data(images, "1.0.0", stable_for=30, verify_timeout=60), "env": RUNTIME_ENV})
    deployment_id = response.json()["deployment_id"]
    _wait_for_step(agent, deployment_id, "verify")
    relay.stop()

    failed = agent.wait(deployment_id)
    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "verify"
    status = agent.get("/v1/status").json()
    assert status["agent"]["docker"] == "unreachable"
    assert status["environments"]["dev"]["state"] == "unknown"
    refused = agent.post({"plan": plan_data(images, "1.0.1", stable_for=0), "env": RUNTIME_ENV})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "docker_unavailable"

    relay.start()  # Docker is back; the agent was not restarted
    assert agent.get("/v1/status").json()["agent"]["docker"] == "reachable"
    assert agent.deploy(plan_data(images, "1.0.1", stable_for=0))["state"] == "succeeded"


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a state directory that can be filled up, or remounted read-only."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint / "state"
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def _docker_snapshot(client: docker.DockerClient) -> list[tuple[str, str]]:
    # Only the suite's own containers: other work on this engine may come and go meanwhile.
    return sorted((c.id, c.status) for c in client.containers.list(all=True, filters={"name": PREFIX}))


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_no_room_for_the_audit_log_refuses_before_any_docker_action(
    make_agent: AgentFactory, images: Images, docker_client: docker.DockerClient, small_state_dir: Path, fault: str
) -> None:
    agent = make_agent(state_dir=small_state_dir)
    mountpoint = small_state_dir.parent
    if fault == "full":
        filler = mountpoint / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=100"], capture_output=True)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], check=True)
    before = _docker_snapshot(docker_client)

    response = agent.post({"plan": plan_data(images, "1.0.0", stable_for=0), "env": RUNTIME_ENV})

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "audit_broken"
    assert "nothing was done" in response.json()["error"]["message"]
    assert _docker_snapshot(docker_client) == before
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(mountpoint)], check=True)
