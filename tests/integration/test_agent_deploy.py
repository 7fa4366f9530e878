"""Deploys through the real agent under gunicorn, against the real Docker Engine and a real registry."""

from __future__ import annotations

import json

import docker

from realparts import CANARY, RUNTIME_ENV, TAGS, Agent, Images, plan_data


def test_a_good_deploy_runs_the_container_exactly_as_the_server_owns_it(
    agent: Agent, images: Images, docker_client: docker.DockerClient
) -> None:
    deployment = agent.deploy(plan_data(images, "1.0.0"))

    assert deployment["state"] == "succeeded", deployment
    assert [s["state"] for s in deployment["steps"]] == ["succeeded"] * 4
    assert [s["action"] for s in deployment["steps"]] == ["pull", "stop_remove", "start", "verify"]
    assert deployment["digest"] == images.digests["1.0.0"]
    assert deployment["actor"] == "token"
    container = docker_client.containers.get(agent.containers["dev"])
    attrs = container.attrs
    assert attrs["State"]["Status"] == "running"
    assert attrs["Config"]["Image"] == images.ref("1.0.0")
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # A Mounts API bind, not `Binds`: Docker refuses a missing source instead of creating it.
    assert not attrs["HostConfig"].get("Binds")
    assert [(m["Type"], m["Source"], m["Target"], m.get("ReadOnly", False)) for m in attrs["HostConfig"]["Mounts"]] == [
        ("bind", str(agent.data_dir), "/var/lib/runtime", False)
    ]
    assert attrs["Config"]["Labels"]["deployplan.deployment-id"] == deployment["id"]
    assert attrs["Config"]["Labels"]["deployplan.environment"] == "dev"
    assert attrs["Config"]["Labels"]["deployplan.tag"] == "1.0.0"
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"] if item.startswith("RUNTIME_"))
    assert env == RUNTIME_ENV

    status = agent.get("/v1/status").json()
    dev = status["environments"]["dev"]
    assert dev["state"] == "running"
    assert dev["image"] == images.ref("1.0.0")
    assert dev["digest"] == images.digests["1.0.0"]
    assert dev["last_deployment"]["id"] == deployment["id"]
    assert status["environments"]["prod"]["state"] == "absent"
    assert status["agent"] == {**status["agent"], "docker": "reachable", "audit": "ok", "deploy_in_progress": None}


def test_redeploy_replaces_the_container_and_a_sha_tag_deploys(
    agent: Agent, images: Images, docker_client: docker.DockerClient
) -> None:
    first = agent.deploy(plan_data(images, "1.0.0", stable_for=0))
    old_id = docker_client.containers.get(agent.containers["dev"]).id
    second = agent.deploy(plan_data(images, TAGS[2], stable_for=0))

    assert (first["state"], second["state"]) == ("succeeded", "succeeded"), second
    new = docker_client.containers.get(agent.containers["dev"])
    assert new.id != old_id
    assert new.attrs["Config"]["Image"] == images.ref(TAGS[2])
    assert len(docker_client.containers.list(all=True, filters={"name": agent.containers["dev"]})) == 1


def test_the_canary_secret_reaches_the_container_and_nothing_else(agent: Agent, images: Images) -> None:
    deployment = agent.deploy(plan_data(images, "1.0.1", stable_for=0))
    assert deployment["state"] == "succeeded"
    answers = agent.get("/v1/status").text + agent.get(f"/v1/deployments/{deployment['id']}").text
    answers += agent.get("/v1/audit").text
    assert CANARY not in answers
    assert CANARY not in (agent.state_dir / "audit.jsonl").read_text()
    assert CANARY not in agent.server.log_text()


def test_values_not_declared_public_are_masked_in_the_container_logs(agent: Agent, images: Images) -> None:
    # The example runtime prints its log level at startup: a value the request did not declare public is masked.
    secret_by_default = agent.deploy(plan_data(images, "1.0.0", stable_for=0), public_env=[])
    assert any("log_level=****" in line for line in secret_by_default["logs"]), secret_by_default["logs"]
    assert not any("log_level=info" in line for line in secret_by_default["logs"])

    public = agent.deploy(plan_data(images, "1.0.1", stable_for=0), public_env=["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"])
    assert any("log_level=info" in line for line in public["logs"]), public["logs"]
    assert "info" not in json.dumps([r for r in agent.audit() if r["event"] != "deployment_finished"])
