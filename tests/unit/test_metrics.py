"""`GET /v1/metrics` through the test client: the families of the contract, from the audit state and Docker."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from agent.auditlog import AuditLog
from agent.lock import try_lock
from conftest import Api, record_deployment
from fakedocker import FakeContainer, FakeDocker


def samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/v1/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_metrics_count_finished_deployments_and_read_docker_now(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2", restart_count=3))
    api = make_api(docker=docker)
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "a1", "dev", "1.0.0", "succeeded")
    record_deployment(log, "a2", "dev", "1.0.1", "failed")
    record_deployment(log, "a3", "dev", "1.0.2", "succeeded")
    record_deployment(log, "a4", "prod", "1.0.2", None)  # still running: its worker holds the deploy lock
    lock = try_lock(api.state_dir / "deploy.lock")
    assert lock is not None
    try:
        found = samples(api)
    finally:
        lock.release()

    def one(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert one("deployplan_deployments_total", environment="dev", state="succeeded") == 2
    assert one("deployplan_deployments_total", environment="dev", state="failed") == 1
    assert one("deployplan_deployments_total", environment="prod", state="succeeded") == 0
    assert one("deployplan_last_deployment_timestamp_seconds", environment="dev", state="succeeded") > 1.7e9
    assert ("deployplan_last_deployment_timestamp_seconds", (("environment", "prod"), ("state", "failed"))) not in found
    assert one("deployplan_runtime_up", environment="dev") == 1
    assert one("deployplan_runtime_up", environment="prod") == 0
    assert one("deployplan_runtime_restarts", environment="dev") == 3
    assert one("deployplan_audit_intact") == 1
    assert one("deployplan_docker_reachable") == 1
    assert one("deployplan_deploy_in_progress") == 1


def test_a_deployment_whose_worker_died_is_interrupted_not_in_progress(make_api: Callable[..., Api]) -> None:
    """Found in review: a scrape did not look for dead workers (a status read did), so a deploy whose worker died
    was in progress on every scrape until someone read /v1/status."""
    api = make_api()
    record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d1", "dev", "1.0.0", None)  # no lock held: dead

    found = samples(api)

    assert found[("deployplan_deploy_in_progress", ())] == 0
    assert found[("deployplan_deployments_total", (("environment", "dev"), ("state", "interrupted")))] == 1


def test_metrics_with_docker_gone(make_api: Callable[..., Api]) -> None:
    found = samples(make_api(docker=FakeDocker(reachable=False)))
    assert found[("deployplan_docker_reachable", ())] == 0
    assert found[("deployplan_runtime_up", (("environment", "dev"),))] == 0
    assert not any(name == "deployplan_runtime_restarts" for name, _ in found)


def test_metrics_need_authentication(make_api: Callable[..., Api]) -> None:
    assert make_api(headers={}).get("/v1/metrics").status_code == 401
