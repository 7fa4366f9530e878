"""Refusals bounded in total: more than 30 in a minute and an identity may only read, and the log grows by one
record a minute, not one a refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.auditlog import AuditLog
from agent.ledger import Ledger
from agent.lock import try_lock
from agent.refusals import LIMIT, RefusalLimit
from conftest import RUNTIME_ENV, Api, plan

BAD = {"plan": {**plan(), "steps": []}, "env": RUNTIME_ENV}  # refused with 422, audited as deploy_refused


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:  # 2027-01-15T08:00:00Z, the start of a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


def _clocked(api: Api) -> Clock:
    clock = Clock()
    api.app.extensions["deployplan"].refusals.clock = clock
    return clock


def test_more_than_30_refusals_a_minute_answer_429_on_writes_and_are_counted_in_one_record(api: Api) -> None:
    """Found in review: 16 threads made 1057 refusals in 15 s and the audit log grew 6.6 MB."""
    clock = _clocked(api)
    for _ in range(LIMIT + 1):
        assert api.deploy(BAD).status_code == 422
        clock.now += 0.5
    size = (api.state_dir / "audit.jsonl").stat().st_size

    limited = [api.deploy(BAD) for _ in range(100)]

    assert {r.status_code for r in limited} == {429}
    assert limited[0].get_json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 60
    assert api.post("/v1/prune", {"keep": 2, "dry_run": True}).status_code == 429  # any write
    assert api.get("/v1/status").status_code == 200  # reads go on
    assert (api.state_dir / "audit.jsonl").stat().st_size == size  # not one record for 100 answers

    clock.now += 60  # the minute has passed: the count goes in one record, and writes are let in again
    assert api.deploy(BAD).status_code == 422
    suppressed = [r for r in api.audit() if r["event"] == "refusals_suppressed"]
    assert [(r["actor"], r["suppressed"], r["minute"]) for r in suppressed] == [("token", 101, "2027-01-15T08:00Z")]
    assert sum(r["event"] == "deploy_refused" for r in api.audit()) == LIMIT + 2


def test_the_limit_is_shared_by_every_worker(make_api: Callable[..., Api], tmp_path: Path) -> None:
    first = make_api(DEPLOY_AGENT_STATE_DIR=str(tmp_path / "shared"))
    second = make_api(DEPLOY_AGENT_STATE_DIR=str(tmp_path / "shared"))  # another gunicorn worker, same state dir
    for number in range(LIMIT + 1):
        assert (first if number % 2 else second).deploy(BAD).status_code == 422

    assert first.deploy(BAD).status_code == 429 and second.deploy(BAD).status_code == 429


def test_unauthenticated_refusals_count_for_no_identity(api: Api) -> None:
    """A 401 has no identity to limit: counting it by address would let anyone behind the tunnel lock out the
    deployer. It is neither audited nor counted."""
    for _ in range(LIMIT * 2):
        assert api.app.test_client().post("/v1/deploy", json=BAD).status_code == 401
    assert api.deploy(BAD).status_code == 422
    assert not (api.state_dir / "refusals.json").exists() or "token" in (api.state_dir / "refusals.json").read_text()


def test_a_busy_lock_is_no_refusal(api: Api) -> None:
    """409 deploy_in_progress answers a valid request at the wrong time; a client may ask again until the lock
    is free (bench/harness.py does), so it is not counted."""
    lock = try_lock(api.state_dir / "deploy.lock")
    assert lock is not None
    try:
        for _ in range(LIMIT * 2):
            assert api.deploy({"plan": plan(), "env": RUNTIME_ENV}).status_code == 409
    finally:
        lock.release()
    assert api.deploy(BAD).status_code == 422


def test_paths_and_methods_no_operation_has_are_no_refusals(api: Api) -> None:
    for _ in range(LIMIT):
        assert api.app.test_client().delete("/v1/audit", headers=api.headers).status_code == 405
        assert api.post("/v1/nowhere", {}).status_code == 404
    assert api.deploy(BAD).status_code == 422


def test_refused_reads_count_too_but_reads_are_never_limited(api: Api) -> None:
    for _ in range(LIMIT + 1):
        assert api.get("/v1/deployments/nope").status_code == 404
    assert api.get("/v1/deployments/nope").status_code == 404  # still a read
    assert api.deploy(BAD).status_code == 429


@pytest.mark.parametrize(
    ("ages", "retry_after"),
    [
        ([], None),
        ([1.0] * LIMIT, None),  # 30 is the limit, not over it
        ([1.0] * (LIMIT + 1), 59),  # the oldest of the 31 leaves the window in 59 s
        ([70.0] * 5 + [10.0] * (LIMIT + 1), 50),
        ([61.0] * (LIMIT + 1), None),  # all older than the minute
        ([30.0] + [1.0] * LIMIT, 30),
    ],
)
def test_retry_after(tmp_path: Path, ages: list[float], retry_after: int | None) -> None:
    clock = Clock()
    limit = RefusalLimit(tmp_path, Ledger(AuditLog(tmp_path / "audit.jsonl")), clock=clock)
    now = clock.now
    for age in sorted(ages, reverse=True):
        clock.now = now - age
        limit.refused("a")
    clock.now = now
    assert limit.retry_after("a") == retry_after
    assert limit.retry_after("someone else") is None


def test_a_minute_that_passed_while_no_worker_ran_is_recorded_at_start(tmp_path: Path) -> None:
    clock = Clock()
    ledger = Ledger(AuditLog(tmp_path / "audit.jsonl"))
    RefusalLimit(tmp_path, ledger, clock=clock).suppressed("ci")
    clock.now += 120
    RefusalLimit(tmp_path, ledger, clock=clock).flush()  # a new worker's start
    records = AuditLog(tmp_path / "audit.jsonl").read_from(0, verifier=None, limit=10)[0]
    assert [(r["event"], r["actor"], r["suppressed"]) for r in records] == [("refusals_suppressed", "ci", 1)]
