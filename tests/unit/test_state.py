"""State is a pure fold over audit records: record sequences in, deployments and status facts out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.auditlog import AuditLog
from agent.state import State, fold, replay
from runner.core.chain import ChainVerifier

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
STEPS = [
    ("pull", "Pull the runtime image"),
    ("stop_remove", "Stop and remove the current runtime"),
    ("start", "Start the new runtime"),
    ("verify", "Verify the runtime stays up"),
]
Event = tuple[str, str | None, dict[str, Any]]


def image(tag: str = "1.0.3") -> str:
    return f"127.0.0.1:5000/acme/runtime:{tag}"


def at(seq: int) -> str:
    return f"2026-11-26T19:50:00.{seq:06d}Z"


def started(d: str, env: str = "dev", tag: str = "1.0.3") -> list[Event]:
    steps = [{"action": a, "name": n} for a, n in STEPS]
    fields = {"environment": env, "image": image(tag), "tag": tag, "container": f"runtime-{env}"}
    return [("deployment_started", d, {**fields, "plan": "runtime", "steps": steps, "env_names": ["RUNTIME_ENV"]})]


def ok(d: str, step: str, **extra: Any) -> list[Event]:
    return [
        ("step_started", d, {"step": step, "actions": [f"{step} it"]}),
        ("step_succeeded", d, {"step": step, "message": f"{step} done", **extra}),
    ]


def fail(d: str, step: str, message: str) -> list[Event]:
    return [
        ("step_started", d, {"step": step, "actions": [f"{step} it"]}),
        ("step_failed", d, {"step": step, "message": message}),
    ]


def finished(d: str, state: str, error: dict[str, str] | None = None, logs: tuple[str, ...] = ()) -> list[Event]:
    return [("deployment_finished", d, {"state": state, "error": error, "logs": list(logs)})]


def interrupted(d: str) -> list[Event]:
    return [("deployment_interrupted", d, {"message": "the agent restarted during the deployment"})]


def deployed(d: str, env: str = "dev", tag: str = "1.0.3", digest: str = A) -> list[Event]:
    """A deployment that runs all four steps and succeeds."""
    steps = ok(d, "pull", digest=digest) + ok(d, "stop_remove") + ok(d, "start", container_id="c" * 64)
    return started(d, env, tag) + steps + ok(d, "verify") + finished(d, "succeeded", logs=("up",))


def records(*events: list[Event]) -> list[dict[str, Any]]:
    """The events as the agent writes them: seq and time in order (the chain is runner.core.chain's business)."""
    flat = [event for group in events for event in group]
    return [
        {
            "seq": n,
            "time": at(n),
            "event": e,
            "deployment_id": d,
            "actor": "ops@example.com",
            **f,
            "prev": "",
            "hash": f"h{n}",
        }
        for n, (e, d, f) in enumerate(flat, 1)
    ]


INTERRUPTED = {"message": "the agent restarted during the deployment"}
S, F, K, P, R = "succeeded", "failed", "skipped", "pending", "running"

# events, {id: (state, step states, error, digest)}, running, last_by_env, digests
CASES = [
    pytest.param(
        [deployed("d1")], {"d1": (S, [S, S, S, S], None, A)}, None, {"dev": "d1"}, {image(): A}, id="all steps succeed"
    ),
    pytest.param(
        [started("d1"), fail("d1", "pull", "manifest unknown"), finished("d1", F, {"step": "pull", "message": "no"})],
        {"d1": (F, [F, K, K, K], {"step": "pull", "message": "no"}, None)},
        None,
        {"dev": "d1"},
        {},
        id="pull fails",
    ),
    pytest.param(
        [
            started("d1"),
            ok("d1", "pull", digest=A),
            ok("d1", "stop_remove"),
            ok("d1", "start", container_id="c1"),
            fail("d1", "verify", "exited with code 1"),
            [("cleanup_started", "d1", {"container_id": "c1", "message": "stopping the new container"})],
            [("cleanup_finished", "d1", {"container_id": "c1", "message": "stopped"})],
            finished("d1", F, {"step": "verify", "message": "exited with code 1"}, logs=("boom",)),
        ],
        {"d1": (F, [S, S, S, F], {"step": "verify", "message": "exited with code 1"}, A)},
        None,
        {"dev": "d1"},
        {image(): A},
        id="verify fails and the new container is stopped",
    ),
    pytest.param(
        [started("d1"), [("step_started", "d1", {"step": "pull", "actions": []})]],
        {"d1": (R, [R, P, P, P], None, None)},
        "d1",
        {"dev": "d1"},
        {},
        id="in progress",
    ),
    pytest.param(
        [started("d1"), ok("d1", "pull", digest=A), ok("d1", "stop_remove"), ok("d1", "start")[:1], interrupted("d1")],
        {"d1": ("interrupted", [S, S, F, K], {"step": "start", **INTERRUPTED}, A)},
        None,
        {"dev": "d1"},
        {image(): A},
        id="interrupted during a step",
    ),
    pytest.param(
        [started("d1"), ok("d1", "pull", digest=A), ok("d1", "stop_remove"), interrupted("d1")],
        {"d1": ("interrupted", [S, S, K, K], {"step": "stop_remove", **INTERRUPTED}, A)},
        None,
        {"dev": "d1"},
        {image(): A},
        id="interrupted between steps: the last started step is named",
    ),
    pytest.param(
        [started("d1"), interrupted("d1")],
        {"d1": ("interrupted", [K, K, K, K], {"step": "pull", **INTERRUPTED}, None)},
        None,
        {"dev": "d1"},
        {},
        id="interrupted before any step: pull is named",
    ),
    pytest.param(
        [[("deploy_refused", None, {"environment": "prod", "reason": "prod needs confirm"})]],
        {},
        None,
        {},
        {},
        id="a refusal changes nothing",
    ),
    pytest.param(
        [
            started("d1"),
            [("quantum_rollback", "d1", {"state": "succeeded"}), ("step_started", "d1", {"step": "warm_up"})],
            [("step_succeeded", "ghost", {"step": "pull", "digest": B}), ("deployment_finished", "ghost", {})],
            [("step_started", None, {"step": "pull"}), ("step_started", 7, {"step": "pull"})],
            [("step_started", "d1", {}), ({"not": "a string"}, "d1", {})],
        ],
        {"d1": (R, [P, P, P, P], None, None)},
        "d1",
        {"dev": "d1"},
        {},
        id="unknown events, steps and ids are ignored",
    ),
    pytest.param(
        [
            started("d1"),
            fail("d1", "pull", "x"),
            finished("d1", F),
            ok("d1", "stop_remove"),
            finished("d1", S),
            interrupted("d1"),
        ],
        {"d1": (F, [F, K, K, K], None, None)},
        None,
        {"dev": "d1"},
        {},
        id="nothing changes a deployment after its final record",
    ),
    pytest.param(
        [deployed("d1", "dev", digest=A), deployed("d2", "prod", digest=B), deployed("d3", "dev", "2.0.0", B)],
        {"d1": (S, [S] * 4, None, A), "d2": (S, [S] * 4, None, B), "d3": (S, [S] * 4, None, B)},
        None,
        {"dev": "d3", "prod": "d2"},
        {image(): A, image("2.0.0"): B},
        id="the first digest of a tag is kept and each environment has its latest",
    ),
    pytest.param(
        [started("d1"), ok("d1", "pull", digest=A), started("d1", "prod", "9.9.9")],
        {"d1": (R, [S, P, P, P], None, A)},
        "d1",
        {"dev": "d1"},
        {image(): A},
        id="an id is started once",
    ),
    pytest.param(
        [started("d1"), started("d2", "prod")],
        {"d1": (R, [P] * 4, None, None), "d2": (R, [P] * 4, None, None)},
        "d2",
        {"dev": "d1", "prod": "d2"},
        {},
        id="running names the latest start",
    ),
]


def outline(deployment: dict[str, Any]) -> tuple[Any, ...]:
    steps = [step["state"] for step in deployment["steps"]]
    return deployment["state"], steps, deployment["error"], deployment["digest"]


@pytest.mark.parametrize(("events", "expected", "running", "last_by_env", "digests"), CASES)
def test_replay(
    events: list[list[Event]],
    expected: dict[str, tuple[Any, ...]],
    running: str | None,
    last_by_env: dict[str, str],
    digests: dict[str, str],
) -> None:
    log = records(*events)
    state = replay(log)

    assert {d: outline(state.deployments[d]) for d in state.deployments} == expected
    assert (state.running, state.last_by_env, state.digests) == (running, last_by_env, digests)
    assert state.last_seq == len(log)
    # Archiving after every record, and bringing deployments back for the next one, changes nothing.
    assert replay(log, detailed=0, batch=1) == state
    assert replay(log, detailed=1, batch=2) == state


def test_a_deployment_has_the_api_shape() -> None:
    state = replay(records(deployed("d1")))
    assert state.deployments["d1"] == {
        "id": "d1",
        "environment": "dev",
        "image": image(),
        "tag": "1.0.3",
        "digest": A,
        "actor": "ops@example.com",
        "origin": None,
        "state": "succeeded",
        "created_at": at(1),
        "finished_at": at(10),
        "container": "runtime-dev",
        "env_names": ["RUNTIME_ENV"],
        "public_env": [],
        "steps": [
            {
                "action": a,
                "name": n,
                "state": S,
                "started_at": at(2 + 2 * i),
                "finished_at": at(3 + 2 * i),
                "message": f"{a} done",
            }
            for i, (a, n) in enumerate(STEPS)
        ],
        "error": None,
        "logs": ["up"],
        "audit_head": {"seq": 10, "hash": "h10"},
    }
    assert state.deployment_summary("d1") == {"id": "d1", "state": "succeeded", "tag": "1.0.3", "finished_at": at(10)}
    assert state.deployment_summary(None) is None and state.deployment_summary("nope") is None
    assert state.deployment("d1") is state.deployments["d1"] and state.deployment("nope") is None


def test_an_interrupted_step_fails_with_the_interruption_message() -> None:
    running: list[Event] = [("step_started", "d1", {"step": "stop_remove", "actions": []})]
    state = replay(records(started("d1"), ok("d1", "pull", digest=A), running, interrupted("d1")))

    stop_remove = state.deployments["d1"]["steps"][1]
    assert (stop_remove["state"], stop_remove["message"]) == (F, INTERRUPTED["message"])
    assert (stop_remove["started_at"], stop_remove["finished_at"]) == (at(4), at(5))
    assert state.deployments["d1"]["finished_at"] == at(5)
    assert state.running is None


def test_a_late_cleanup_note_is_kept() -> None:
    cleanup: list[Event] = [("cleanup_started", "d1", {"container_id": "c1", "message": "stopping"})]
    cleanup += [("cleanup_finished", "d1", {"container_id": "c1", "message": "stopped"})]
    state = replay(records(started("d1"), fail("d1", "start", "no"), finished("d1", F), cleanup))
    assert state.deployments["d1"]["cleanup"] == {
        "container_id": "c1",
        "message": "stopped",
        "started_at": at(5),
        "finished_at": at(6),
    }


def test_old_deployments_are_archived_losslessly() -> None:
    log = records(*[deployed(f"d{n}", "dev" if n % 3 else "prod", f"1.0.{n}") for n in range(300)])
    full = replay(log, detailed=10**6)
    state = replay(log, detailed=50, batch=16)

    assert len(state.deployments.recent) < 50 + 16
    assert len(state.deployments) == 300 and next(iter(state.deployments)) == "d0"
    assert "d0" in state.deployments and "d300" not in state.deployments
    assert state == full
    assert state.deployment("d0") == full.deployment("d0") and state.deployment("d0") is not None
    assert state.deployment_summary(state.last_by_env["prod"]) == full.deployment_summary("d297")
    # A record for an archived deployment brings it back and changes it.
    fold(state, {"seq": 10**6, "time": "late", "event": "cleanup_finished", "deployment_id": "d0", "message": "gc"})
    assert state.deployments["d0"]["cleanup"]["finished_at"] == "late"


def test_a_fold_shares_strings_and_does_not_copy_records() -> None:
    log = records(deployed("d1"), deployed("d2"))
    state = replay(log)
    one, two = state.deployments["d1"], state.deployments["d2"]
    assert one["image"] is two["image"] and one["steps"][0]["name"] is two["steps"][0]["name"]
    assert one["logs"] is log[9]["logs"]


def test_replay_from_a_real_audit_log_in_batches(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for event, deployment_id, fields in [e for group in (deployed("d1"), started("d2", "prod")) for e in group]:
        audit.append(event, deployment_id=deployment_id, actor="ops@example.com", **fields)

    state, verifier, offset = State(), ChainVerifier(), 0
    while True:
        batch, offset = audit.read_from(offset, verifier=verifier, limit=3)
        if not batch:
            break
        for record in batch:
            fold(state, record)

    assert state == replay(audit.read_from(0)[0])
    assert (state.last_seq, state.running, state.last_by_env) == (11, "d2", {"dev": "d1", "prod": "d2"})
    assert state.deployments["d1"]["state"] == S and state.digests == {image(): A}
