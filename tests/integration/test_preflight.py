"""Fail before the stop: faults knowable before the old container stops are caught there, against the real parts.

The installed `deploy-agent` (start and `check`), the real agent under gunicorn, the real Docker Engine, the lab
registry and a registry that wants bearer tokens as GHCR does.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from token_registry import TokenRegistry, TokenServer

import lab
from agent.dockerio import connect
from agent.executor import ActionFailed, Executor
from realparts import PREFIX, RUNTIME_ENV, AgentFactory, Cli, Images, agent_env, plan_data
from runner.core.steps import Action


def deploy_agent(cli: Cli, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `deploy-agent`, as an operator runs it."""
    return subprocess.run(
        [str(cli.bin_dir / "deploy-agent"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def lab_env(images: Images, tmp_path: Path, **changes: str) -> dict[str, str]:
    """A good agent configuration for the lab (token auth), its mount source created."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    name = f"{PREFIX}-pre-{secrets.token_hex(3)}"
    env = agent_env(
        images,
        state_dir=tmp_path / "state",
        containers={"dev": f"{name}-dev", "prod": f"{name}-prod"},
        token=secrets.token_hex(24),
        volumes=f"{data}:/var/lib/runtime:rw",
    )
    return {**env, **changes}


# -- agent start


def test_a_missing_mount_directory_stops_the_agent_at_start(cli: Cli, images: Images, tmp_path: Path) -> None:
    """Found in issue 18: with prod's directory absent, a prod deploy still verified: Docker had created it,
    root:root 0755, and the runtime could not write to it."""
    missing = tmp_path / "prod-data"
    env = lab_env(images, tmp_path, DEPLOY_AGENT_VOLUMES_PROD=f"{missing}:/var/lib/runtime:rw")

    started = deploy_agent(cli, env=env)

    assert started.returncode == 2, started.stdout + started.stderr
    assert f"DEPLOY_AGENT_VOLUMES_PROD: the mount source {missing} does not exist" in started.stderr
    assert not missing.exists()
    assert not (tmp_path / "state").exists()


def test_a_typo_and_a_placeholder_stop_the_agent_at_start(cli: Cli, images: Images, tmp_path: Path) -> None:
    """Found in issue 18: DEPLOY_AGENT_DEPLOYER_PROD (missing S) and the example's AUD placeholder were accepted."""
    env = lab_env(
        images,
        tmp_path,
        DEPLOY_AGENT_DEPLOYER_PROD="ci-prod.access",
        DEPLOY_AGENT_REGISTRY_USERNAME="<registry user>",
        DEPLOY_AGENT_REGISTRY_PASSWORD="replace-with-a-read-packages-token",
    )

    started = deploy_agent(cli, env=env)

    assert started.returncode == 2, started.stdout + started.stderr
    assert "DEPLOY_AGENT_DEPLOYER_PROD is not a variable of the deploy agent: did you mean " in started.stderr
    assert "DEPLOY_AGENT_REGISTRY_USERNAME='<registry user>' still holds a placeholder" in started.stderr
    assert "DEPLOY_AGENT_REGISTRY_PASSWORD still holds a placeholder" in started.stderr
    assert "replace-with-a-read-packages-token" not in started.stderr  # a secret's value is never shown


# -- agent before the pull


def test_a_mount_source_removed_after_start_refuses_the_deploy_touching_nothing(
    make_agent: AgentFactory, images: Images, docker_client: docker.DockerClient
) -> None:
    agent = make_agent(environments=("dev",))
    assert agent.deploy(plan_data(images, "1.0.0"))["state"] == "succeeded"
    before = docker_client.containers.get(agent.containers["dev"])
    agent.data_dir.rmdir()
    records = len(agent.audit())

    # The dry run is refused the same way, and not audited (found in review: it answered "would deploy").
    dry = agent.post({"plan": plan_data(images, "1.0.1"), "env": RUNTIME_ENV, "dry_run": True})
    assert len(agent.audit()) == records
    refused = agent.post({"plan": plan_data(images, "1.0.1"), "env": RUNTIME_ENV})
    assert (dry.status_code, dry.json()) == (503, refused.json()), dry.text

    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "server_not_ready"
    assert error["details"] == [
        {
            "path": "DEPLOY_AGENT_VOLUMES_DEV",
            "message": f"the mount source {agent.data_dir} does not exist; create it, owned by the runtime's user "
            f"(install -d -m 0750 -o UID -g GID {agent.data_dir})",
        }
    ]
    last = agent.audit()[-1]
    assert (last["event"], last["environment"]) == ("deploy_refused", "dev")
    assert f"the mount source {agent.data_dir} does not exist" in last["reason"][0]
    after = docker_client.containers.get(agent.containers["dev"])
    assert (after.id, after.status, after.image.id) == (before.id, "running", before.image.id)
    assert not agent.data_dir.exists()

    # The deploy lock was released: with the directory back, the next deploy goes through.
    agent.data_dir.mkdir()
    assert agent.deploy(plan_data(images, "1.0.1"))["state"] == "succeeded"


# -- the start step, on the real engine


@pytest.fixture
def local_image(images: Images, docker_client: docker.DockerClient) -> Iterator[str]:
    docker_client.images.pull(images.repository, tag="1.0.0")
    yield images.ref("1.0.0")
    lab.remove_images(docker_client, images.repository)


def test_the_start_step_never_creates_a_missing_mount_source(
    local_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """`Binds` would have Docker create the folder (root, 0755); the Mounts API refuses to create the container."""
    missing, present = tmp_path / "gone", tmp_path / "here"
    present.mkdir()
    name = f"{PREFIX}-mounts-{secrets.token_hex(3)}"
    executor = Executor(connect=connect, env={"RUNTIME_ENV": "dev"}, registry_auth=None)

    def create(source: Path, suffix: str) -> dict[str, Any]:
        options = {
            "name": name + suffix,
            "image": local_image,
            "binds": [f"{source}:/var/lib/runtime:rw"],
            "restart_policy": "no",
            "log_config": None,
            "labels": {},
            "env_names": ["RUNTIME_ENV"],
        }
        return executor.perform(Action("create", "create", "created", options))

    try:
        with pytest.raises(ActionFailed, match="bind source path does not exist"):
            create(missing, "-missing")
        assert not missing.exists()
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(name + "-missing")

        created = create(present, "-present")
        mounts = docker_client.api.inspect_container(created["container_id"])["Mounts"]
        assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
            ("bind", str(present), "/var/lib/runtime", True)
        ]
    finally:
        executor.close()
        lab.remove_containers(docker_client, name)


# -- deploy-agent check


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`what` -> the line's status, from the check's output (the summary line left out)."""
    found = {}
    for line in result.stdout.splitlines()[:-1]:
        status, _, rest = line.partition("  ")
        found[rest.strip().split(": ", 1)[0]] = status.strip()
    return found


def test_check_of_a_good_configuration_is_all_ok_and_changes_nothing(
    cli: Cli, images: Images, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    env = lab_env(images, tmp_path)
    containers_before = sorted(c.id for c in docker_client.containers.list(all=True))

    result = deploy_agent(cli, "check", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = check_lines(result)
    docker_fs = f"Docker's filesystem ({docker_client.info()['DockerRootDir']})"
    # Free space depends on this machine: ok, or warn under 1 GiB; every other line is ok.
    assert {lines.pop("state directory's filesystem"), lines.pop(docker_fs)} <= {"ok", "warn"}
    assert lines == {
        "variables": "ok",
        f"state directory {tmp_path / 'state'}": "ok",
        "DEPLOY_AGENT_VOLUMES_DEV": "ok",
        "DEPLOY_AGENT_VOLUMES_PROD": "ok",
        "Docker Engine": "ok",
        f"registry {images.repository.split('/')[0]}": "ok",
        "DEPLOY_AGENT_BIND": "ok",
    }
    assert result.stdout.splitlines()[-1].endswith("0 FAIL; nothing was changed or started")
    assert not (tmp_path / "state").exists()
    assert env["DEPLOY_AGENT_TOKEN"] not in result.stdout + result.stderr
    assert sorted(c.id for c in docker_client.containers.list(all=True)) == containers_before


def test_check_of_a_bad_configuration_names_each_fault_and_exits_1(cli: Cli, images: Images, tmp_path: Path) -> None:
    missing = tmp_path / "prod-data"
    env = lab_env(
        images,
        tmp_path,
        DEPLOY_AGENT_BIND="0.0.0.0:8700",
        DEPLOY_AGENT_VOLUMES_PROD=f"{missing}:/var/lib/runtime:rw",
        DEPLOY_AGENT_DEPLOYER_PROD="ci-prod.access",
        DOCKER_HOST=f"tcp://127.0.0.1:{lab.free_port()}",
    )

    result = deploy_agent(cli, "check", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "FAIL  DEPLOY_AGENT_DEPLOYER_PROD: DEPLOY_AGENT_DEPLOYER_PROD is not a variable of the deploy agent: " in out
    assert "did you mean DEPLOY_AGENT_DEPLOYERS_" in out
    assert "warn  state directory: not checked: the variables above must be right first" in out
    assert "FAIL  Docker Engine: not reachable at tcp://127.0.0.1:" in out
    assert not missing.exists() and not (tmp_path / "state").exists()

    # With the name fixed, each of the others is its own line.
    del env["DEPLOY_AGENT_DEPLOYER_PROD"]
    result = deploy_agent(cli, "check", env=env)
    assert result.returncode == 1
    lines = check_lines(result)
    assert lines["variables"] == "ok"
    assert lines["DEPLOY_AGENT_VOLUMES_PROD"] == "FAIL"
    assert f"FAIL  DEPLOY_AGENT_VOLUMES_PROD: the mount source {missing} does not exist" in result.stdout
    assert lines["Docker Engine"] == "FAIL"
    assert lines["DEPLOY_AGENT_BIND"] == "warn"
    assert "warn  Docker's filesystem: not checked: Docker is not reachable" in result.stdout


# -- the dry run asks the registry, with the server's credentials


@pytest.fixture
def token_registry(
    images: Images, docker_client: docker.DockerClient, tmp_path: Path
) -> Iterator[tuple[str, str, str]]:
    """A registry that wants bearer tokens (as GHCR), holding one runtime image: (repository, user, password)."""
    password = f"pw-{secrets.token_hex(8)}"
    with TokenServer(username="lab-bot", password=password) as tokens, TokenRegistry(tmp_path, tokens) as registry:
        repository = f"{registry.host}/{PREFIX}-auth-{secrets.token_hex(3)}/runtime"
        try:
            docker_client.images.pull(images.repository, tag="1.0.0").tag(repository, tag="1.0.0")
            auth = {"username": "lab-bot", "password": password}
            records = list(docker_client.api.push(repository, tag="1.0.0", stream=True, decode=True, auth_config=auth))
            assert not [r for r in records if "error" in r], records
            lab.remove_images(docker_client, repository)
            yield repository, "lab-bot", password
        finally:
            lab.remove_images(docker_client, repository)
            lab.remove_images(docker_client, images.repository)


def test_a_stale_registry_credential_shows_in_the_dry_run_and_the_check(
    make_agent: AgentFactory, cli: Cli, images: Images, tmp_path: Path, token_registry: tuple[str, str, str]
) -> None:
    """Found in issue 18: a stale registry credential was found only by the pull of the real deploy, after prod's
    reviewers approved."""
    repository, user, password = token_registry
    plan = {**plan_data(images, "1.0.0"), "image": f"{repository}:1.0.0"}
    stale = {
        "DEPLOY_AGENT_IMAGE_REPOSITORY": repository,
        "DEPLOY_AGENT_REGISTRY_USERNAME": user,
        "DEPLOY_AGENT_REGISTRY_PASSWORD": "an-old-password",
    }
    agent = make_agent(environments=("dev",), extra_env=stale)

    answer = agent.post({"plan": plan, "env": RUNTIME_ENV, "dry_run": True}).json()

    assert answer["registry"]["found"] is False, answer
    assert "unauthorized" in answer["registry"]["reason"].lower() or "401" in answer["registry"]["reason"]
    assert "an-old-password" not in str(answer)
    checked = deploy_agent(cli, "check", env=lab_env(images, tmp_path, **stale))
    assert checked.returncode == 1, checked.stdout
    host = repository.split("/")[0]
    assert f"FAIL  registry {host}: the registry refused {user}: " in checked.stdout
    assert "an-old-password" not in checked.stdout + checked.stderr

    fresh = {**stale, "DEPLOY_AGENT_REGISTRY_PASSWORD": password}
    agent = make_agent(environments=("dev",), extra_env=fresh)
    answer = agent.post({"plan": plan, "env": RUNTIME_ENV, "dry_run": True}).json()
    assert answer["registry"]["found"] is True and answer["registry"]["digest"].startswith("sha256:"), answer
    checked = deploy_agent(cli, "check", env=lab_env(images, tmp_path, **fresh))
    assert f"ok    registry {host}: the engine logs in as {user}" in checked.stdout, checked.stdout
