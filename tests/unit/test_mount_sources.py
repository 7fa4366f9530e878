"""Mount sources checked again before each deploy's pull: one removed after startup refuses the deploy (503
server_not_ready, audited, nothing touched) and its dry run the same way (not audited), so `dry-run --agent` and
`check --tag` say so before anyone approves; removed during the pull, it fails the deploy before anything is
stopped."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import RUNTIME_ENV, TOKEN, Api, InProcessCli, plan
from fakedocker import FakeContainer, FakeDocker

REPO = Path(__file__).resolve().parents[2]
GHCR = "ghcr.io/acme/trader/runtime"


def body() -> dict[str, object]:
    return {"plan": plan(), "env": RUNTIME_ENV, "public_env": ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"]}


def test_a_source_removed_after_startup_refuses_the_deploy(make_api: Callable[..., Api], tmp_path: Path) -> None:
    data = tmp_path / "dev-data"
    data.mkdir()
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2"))
    api = make_api(docker=docker, DEPLOY_AGENT_VOLUMES_DEV=f"{data}:/var/lib/runtime:rw")
    data.rmdir()

    for _ in range(2):  # the second answer is the same 503, not 409: the deploy lock was released
        response = api.deploy(body())
        assert response.status_code == 503, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "server_not_ready"
        assert error["details"][0]["path"] == "DEPLOY_AGENT_VOLUMES_DEV"
        assert f"the mount source {data} does not exist" in error["details"][0]["message"]
    refused = [r for r in api.audit() if r["event"] == "deploy_refused"]
    assert len(refused) == 2 and refused[0]["environment"] == "dev"
    assert f"DEPLOY_AGENT_VOLUMES_DEV: the mount source {data} does not exist" in refused[0]["reason"][0]
    assert not [r for r in api.audit() if r["event"] == "deployment_started"]
    assert docker.touched() == []
    assert not data.exists()


def test_a_dry_run_with_a_source_removed_answers_the_deploys_503_unaudited(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Found in review: the dry run never looked at the mount sources, so it answered "would deploy" while the
    deploy itself was refused with 503."""
    data = tmp_path / "dev-data"
    data.mkdir()
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2"))
    docker.registry[plan()["image"]] = "sha256:" + "b" * 64
    api = make_api(docker=docker, DEPLOY_AGENT_VOLUMES_DEV=f"{data}:/var/lib/runtime:rw")
    data.rmdir()

    dry = api.deploy({**body(), "dry_run": True})
    deploy = api.deploy(body())

    assert dry.status_code == 503, dry.get_json()
    assert dry.get_json() == deploy.get_json()  # the same code, message and details as the deploy's refusal
    assert dry.get_json()["error"]["details"][0]["path"] == "DEPLOY_AGENT_VOLUMES_DEV"
    assert [r["event"] for r in api.audit()] == ["deploy_refused"]  # the deploy's; a dry run is not audited
    assert docker.touched() == []
    assert "inspect_distribution" not in [name for name, _, _ in docker.calls]  # refused before the registry
    data.mkdir()
    assert api.deploy({**body(), "dry_run": True}).status_code == 200


def test_dry_run_agent_and_check_name_the_missing_source_before_the_deploy(
    make_api: Callable[..., Api], serve: Callable[[Api], str], cli: InProcessCli, tmp_path: Path
) -> None:
    """Found in review: `dry-run --agent` exited 0 ("would deploy") and `check --tag` said ready, then apply got
    503 server_not_ready, in prod after the approval."""
    data = tmp_path / "dev-data"
    data.mkdir()
    docker = FakeDocker()
    docker.registry[f"{GHCR}:1.0.3"] = "sha256:" + "b" * 64
    api = make_api(docker=docker, DEPLOY_AGENT_IMAGE_REPOSITORY=GHCR, DEPLOY_AGENT_VOLUMES_DEV=f"{data}:/d:rw")
    url = serve(api)
    data.rmdir()
    ws = tmp_path / "ws"
    (ws / "infra").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", ws / "infra")
    shutil.copytree(REPO / "plans", ws / "plans")
    env = {**RUNTIME_ENV, "DEPLOY_AGENT_URL": url, "DEPLOY_AGENT_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/trader"}

    dry = cli.run("dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--agent", url, cwd=ws, env=env)
    checked = cli.run("check", "--env", "dev", "--tag", "1.0.3", cwd=ws, env=env)

    missing = (
        f"DEPLOY_AGENT_VOLUMES_DEV: the mount source {data} does not exist; create it, owned by the runtime's user"
    )
    assert dry.returncode == 3, dry.stdout + dry.stderr
    assert dry.stderr.startswith(
        "error: the agent refused (503 server_not_ready): the server is not ready to deploy dev: 1 mount source(s) "
        "missing; nothing was touched\n"
    ), dry.stderr
    assert f"  {missing}" in dry.stderr and "would deploy" not in dry.stdout
    assert checked.returncode == 1, checked.stdout
    assert (
        "FAIL  dry run: the agent refused (503 server_not_ready): the server is not ready to deploy dev: 1 mount "
        f"source(s) missing; nothing was touched; {missing}" in checked.stdout
    ), checked.stdout
    assert (
        "change: on the server, create each missing mount source of DEPLOY_AGENT_VOLUMES_DEV as named (owned by the "
        "runtime's user), or correct the variable and restart the agent" in checked.stdout
    )
    assert checked.stdout.rstrip().endswith("not ready")
    assert api.audit() == [] and docker.touched() == []


def test_a_worker_that_boots_after_a_source_went_missing_still_serves(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Found while testing: gunicorn's second worker booted after the source was removed, failed its boot on the
    startup check, and gunicorn shut the whole agent down. The start (`deploy-agent`) checks; a worker serves."""
    missing = tmp_path / "gone"
    api = make_api(DEPLOY_AGENT_VOLUMES_DEV=f"{missing}:/var/lib/runtime:rw")

    assert api.get("/v1/status").status_code == 200
    refused = api.deploy(body())
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (503, "server_not_ready")


def test_a_source_removed_during_the_pull_fails_the_deploy_before_the_stop(tmp_path: Path) -> None:
    """A pull may take minutes: a source gone by its end must not be found only by the start, after the stop."""
    from typing import Any, cast

    from agent.auditlog import AuditLog
    from agent.config import load_config
    from agent.deploy import Deployment
    from agent.executor import Executor
    from agent.ledger import Ledger
    from agent.validate import check_request
    from conftest import AGENT_ENV

    data = tmp_path / "dev-data"
    data.mkdir()
    config = load_config(
        {**AGENT_ENV, "DEPLOY_AGENT_STATE_DIR": str(tmp_path / "state"), "DEPLOY_AGENT_VOLUMES_DEV": f"{data}:/d"}
    )
    ledger = Ledger(AuditLog(tmp_path / "audit.jsonl"))
    accepted, findings = check_request(body(), config)
    assert accepted is not None and findings == []
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2"))
    performed: list[str] = []

    class PullRemovesTheSource:
        def perform(self, action: Any) -> dict[str, Any]:
            performed.append(action.kind)
            data.rmdir()  # what an operator's cleanup might do while the image downloads
            return {"digest": "sha256:" + "a" * 64}

        def client(self) -> FakeDocker:
            return docker

        def close(self) -> None:
            pass

    ledger.append("deployment_started", deployment_id="d1", actor="ops", **accepted.started_record())
    Deployment(
        id="d1",
        actor="ops",
        request=accepted,
        config=config,
        ledger=ledger,
        executor=cast(Executor, PullRemovesTheSource()),
    ).run()

    assert performed == ["pull"]
    assert docker.touched() == [] and docker.calls == []  # the current container was not even looked at
    state = ledger.read(lambda s: s.deployment("d1"))
    assert state is not None and state["state"] == "failed"
    assert state["error"]["step"] == "stop_remove"
    assert f"the mount source {data} does not exist" in state["error"]["message"]
    assert state["error"]["message"].endswith("nothing was stopped")
