"""Failed deploys, for real: the runtime is left not running, the reason and the container's logs are kept."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

import lab
from realparts import PREFIX, RUNTIME_ENV, Agent, AgentFactory, Images, plan_data


def _container(client: docker.DockerClient, name: str) -> dict:
    return client.api.inspect_container(name)


def test_a_tag_missing_from_the_registry_leaves_the_running_container_untouched(
    agent: Agent, images: Images, docker_client: docker.DockerClient
) -> None:
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    before = _container(docker_client, agent.containers["dev"])

    failed = agent.deploy(plan_data(images, "9.9.9", stable_for=0))

    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "pull"
    assert "9.9.9" in failed["error"]["message"]
    assert [s["state"] for s in failed["steps"]] == ["failed", "skipped", "skipped", "skipped"]
    after = _container(docker_client, agent.containers["dev"])
    assert (after["Id"], after["State"]["Status"], after["State"]["StartedAt"]) == (
        before["Id"],
        "running",
        before["State"]["StartedAt"],
    )


def test_the_registry_down_fails_the_pull_and_touches_nothing(
    agent: Agent, images: Images, registry: lab.Registry, docker_client: docker.DockerClient
) -> None:
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    before = _container(docker_client, agent.containers["dev"])["Id"]
    registry.stop(keep_storage=True)
    try:
        failed = agent.deploy(plan_data(images, "1.0.1", stable_for=0))
    finally:
        registry.start()
    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "pull"
    assert _container(docker_client, agent.containers["dev"])["Id"] == before


def test_a_runtime_missing_its_config_is_stopped_and_says_why(
    agent: Agent, images: Images, docker_client: docker.DockerClient
) -> None:
    env = {k: v for k, v in RUNTIME_ENV.items() if k != "RUNTIME_LOG_LEVEL"}
    failed = agent.deploy(plan_data(images, "1.0.0", stable_for=2), env=env)

    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "verify"
    assert any("RUNTIME_LOG_LEVEL" in line for line in failed["logs"]), failed["logs"]
    state = _container(docker_client, agent.containers["dev"])
    assert state["State"]["Status"] == "exited"
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "no"  # kept for inspection, never restarted
    assert agent.get("/v1/status").json()["environments"]["dev"]["state"] == "exited"


@pytest.mark.parametrize(
    ("fault", "reason"), [("crash-after-2s", "restarted"), ("unhealthy", "unhealthy")], ids=["crash", "unhealthy"]
)
def test_a_runtime_that_does_not_stay_up_fails_verify(
    agent: Agent, images: Images, docker_client: docker.DockerClient, fault: str, reason: str
) -> None:
    failed = agent.deploy(
        plan_data(images, "1.0.0", stable_for=5, verify_timeout=20), env={**RUNTIME_ENV, "RUNTIME_FAULT": fault}
    )

    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "verify"
    assert reason in failed["error"]["message"], failed["error"]
    assert failed["logs"], "the container's last log lines are kept"
    assert _container(docker_client, agent.containers["dev"])["State"]["Running"] is False


def test_a_moved_tag_is_refused(
    agent: Agent, images: Images, registry: lab.Registry, docker_client: docker.DockerClient
) -> None:
    ref = images.ref("2.0.0")
    lab.build_runtime_image(docker_client, ref, label="first")
    lab.push(docker_client, ref)
    try:
        assert agent.deploy(plan_data(images, "2.0.0", stable_for=0))["state"] == "succeeded"
        lab.build_runtime_image(docker_client, ref, label="moved")
        lab.push(docker_client, ref)
        failed = agent.deploy(plan_data(images, "2.0.0", stable_for=0))
    finally:
        lab.remove_images(docker_client, ref)
    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "pull"
    assert "moved" in failed["error"]["message"]
    assert _container(docker_client, agent.containers["dev"])["State"]["Running"] is True


def test_ten_parallel_deploys_get_exactly_one_202(agent: Agent, images: Images) -> None:
    body = {"plan": plan_data(images, "1.0.0", stable_for=0), "env": RUNTIME_ENV}
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: agent.post(body), range(10)))
    assert sorted(r.status_code for r in responses) == [202] + [409] * 9
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"deploy_in_progress"}
    [accepted] = [r.json()["deployment_id"] for r in responses if r.status_code == 202]
    assert agent.wait(accepted)["state"] == "succeeded"
    # One deployment ran, alone: one start record, and its four steps never interleaved with another's.
    started = [r for r in agent.audit() if r["event"] == "deployment_started"]
    assert [r["deployment_id"] for r in started] == [accepted]
    assert {r["deployment_id"] for r in agent.audit() if r["event"].startswith("step_")} == {accepted}


def test_sigkill_during_verify_leaves_an_interrupted_deployment_and_resumes_nothing(
    make_agent: AgentFactory, images: Images, docker_client: docker.DockerClient
) -> None:
    agent = make_agent()
    response = agent.post({"plan": plan_data(images, "1.0.0", stable_for=30, verify_timeout=60), "env": RUNTIME_ENV})
    deployment_id = response.json()["deployment_id"]
    deadline = time.monotonic() + 30
    while agent.get(f"/v1/deployments/{deployment_id}").json()["steps"][3]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    agent.server.kill()

    restarted = lab.AgentServer(agent.server.env, log_path=agent.server.log_path, command=agent.server.command).start()
    agent.server = restarted
    found = agent.get(f"/v1/deployments/{deployment_id}").json()
    assert found["state"] == "interrupted"
    assert found["steps"][3]["state"] == "failed"
    events = [r["event"] for r in agent.audit()]
    assert events[-1] == "deployment_interrupted"
    assert events.count("deployment_interrupted") == 1
    # Docker's real state is reported; nothing was restarted or resumed by the agent.
    dev = agent.get("/v1/status").json()["environments"]["dev"]
    assert dev["state"] == _container(docker_client, agent.containers["dev"])["State"]["Status"]
    assert dev["last_deployment"]["state"] == "interrupted"
    again = agent.deploy(plan_data(images, "1.0.1", stable_for=0))
    assert again["state"] == "succeeded"


def test_a_tampered_audit_log_refuses_deploys(agent: Agent, images: Images) -> None:
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    path = agent.state_dir / "audit.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["actor"] = "mallory"
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    agent.server.stop()
    agent.server.start()

    response = agent.post({"plan": plan_data(images, "1.0.1", stable_for=0), "env": RUNTIME_ENV})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_broken"
    assert agent.get("/v1/status").json()["agent"]["audit"] == "broken"
    assert PREFIX in agent.containers["dev"]


def test_an_old_record_edited_while_the_agent_runs_refuses_the_next_deploy(agent: Agent, images: Images) -> None:
    assert agent.deploy(plan_data(images, "1.0.0", stable_for=0))["state"] == "succeeded"
    path = agent.state_dir / "audit.jsonl"
    text = path.read_text()
    assert '"actor":"token"' in text.splitlines()[0]
    # Same length, in place: no size change for a running agent to notice, only the chain.
    path.write_text(text.replace('"actor":"token"', '"actor":"TOKEN"', 1))

    response = agent.post({"plan": plan_data(images, "1.0.1", stable_for=0), "env": RUNTIME_ENV})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_broken"
    assert "line 1" in response.json()["error"]["message"]
    assert agent.get("/v1/status").json()["agent"]["audit"] == "broken"
