"""What the agent does when a worker starts: its state directory, a torn audit log, a broken one."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.auditlog import AuditLog
from agent.config import ConfigError
from conftest import Api, record_deployment
from runner.core.chain import verify_lines


def test_the_state_directory_is_created_for_the_agent_alone(api: Api) -> None:
    assert stat.S_IMODE(api.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((api.state_dir / "deploy.lock").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_a_state_directory_others_may_write_to_stops_the_agent(
    make_api: Callable[..., Api], tmp_path: Path, mode: int
) -> None:
    """Found in review: another local user could create or hold the deploy lock in a group-writable directory."""
    state = tmp_path / "shared-state"
    state.mkdir()
    os.chmod(state, mode)
    with pytest.raises(ConfigError, match=f"is writable by its group or by everyone \\(mode {mode:04o}\\)"):
        make_api(DEPLOY_AGENT_STATE_DIR=str(state))
    assert list(state.iterdir()) == []


def test_a_readable_state_directory_is_fine(make_api: Callable[..., Api], tmp_path: Path) -> None:
    state = tmp_path / "state-755"
    state.mkdir()
    os.chmod(state, 0o755)
    assert make_api(DEPLOY_AGENT_STATE_DIR=str(state)).get("/v1/status").status_code == 200


def _started(log: AuditLog) -> None:
    record_deployment(log, "d1", "dev", "1.0.0", None)
    log.append("step_started", deployment_id="d1", actor="token", step="pull", actions=["pull it"])


def test_a_torn_last_line_is_set_aside_and_the_agent_starts(make_api: Callable[..., Api], tmp_path: Path) -> None:
    """Found in review: a crash mid-append left a torn line, and the agent could not boot (the interrupted
    record could not be appended after it)."""
    state = tmp_path / "torn-state"
    state.mkdir(mode=0o700)
    log = AuditLog(state / "audit.jsonl")
    _started(log)
    torn = b'{"seq":3,"time":"2026-11-30T10:00:00.000000Z","event":"step_succ'
    with open(log.path, "ab") as f:
        f.write(torn)

    api = make_api(DEPLOY_AGENT_STATE_DIR=str(state))

    records = api.audit()
    assert [r["event"] for r in records] == [
        "deployment_started",
        "step_started",
        "torn_tail_discarded",
        "deployment_interrupted",
    ]
    kept = [p for p in state.iterdir() if p.name.startswith("audit.torn-")]
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    assert records[2]["file"] == kept[0].name and records[2]["bytes"] == len(torn)
    assert verify_lines(log.path.read_bytes().splitlines(keepends=True), name="a").torn_bytes == 0
    status = api.get("/v1/status").get_json()
    assert status["agent"]["audit"] == "ok"
    assert api.get("/v1/deployments/d1").get_json()["state"] == "interrupted"


def test_any_other_broken_line_stops_deploys_not_the_agent(make_api: Callable[..., Api], tmp_path: Path) -> None:
    state = tmp_path / "broken-state"
    state.mkdir(mode=0o700)
    log = AuditLog(state / "audit.jsonl")
    _started(log)
    lines = log.path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["actor"] = "mallory"
    log.path.write_bytes(json.dumps(record).encode() + b"\n" + lines[1])

    api = make_api(DEPLOY_AGENT_STATE_DIR=str(state))

    status = api.get("/v1/status").get_json()
    assert status["agent"]["audit"] == "broken" and "line 1" in status["agent"]["audit_problem"]
    assert api.get("/v1/audit").status_code == 200  # the records are evidence: still served
    assert not [p for p in state.iterdir() if p.name.startswith("audit.torn-")]
