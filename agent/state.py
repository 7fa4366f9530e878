"""All agent state, as a pure fold over the audit log's records.

Repeated strings (environment, image, tag, actor, container, step names) are interned; records are never copied.
Old deployments are archived by `agent.archive.Deployments`, so a million records replay in ~75 MB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.archive import Deployments

_SUMMARY = ("id", "state", "tag", "finished_at")
# Prune keeps at most 50 digests per environment; nothing older than that is ever asked for.
KEPT_DIGESTS = 50
Record = dict[str, Any]


@dataclass(kw_only=True)
class State:
    """Everything the agent knows, rebuilt from the audit log alone."""

    deployments: Deployments = field(default_factory=Deployments)
    started: list[str] = field(default_factory=list)  # deployment ids, oldest first
    last_by_env: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # image -> the digest it first had
    running: str | None = None
    last_seq: int = 0
    last_hash: str | None = None
    # For metrics and prune: finished deployments by (environment, state), the newest finished one per
    # environment, and each environment's distinct successful digests, oldest first.
    finished: dict[tuple[str, str], int] = field(default_factory=dict)
    last_finished_at: dict[tuple[str, str], str] = field(default_factory=dict)
    last_finished_by_env: dict[str, str] = field(default_factory=dict)
    succeeded_digests: dict[str, list[str]] = field(default_factory=dict)
    # The `jti` of every GitHub OIDC token a deployment was accepted with: each is accepted once, ever.
    oidc_jtis: set[str] = field(default_factory=set)

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        """`GET /v1/deployments/<id>`: one deployment, recent or archived, or None."""
        return self.deployments.get(deployment_id)

    def deployment_summary(self, deployment_id: str | None) -> dict[str, Any] | None:
        """The `last_deployment` entry of `/v1/status`."""
        found = None if deployment_id is None else self.deployment(deployment_id)
        return None if found is None else {key: found[key] for key in _SUMMARY}

    def history(self, environment: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` deployments (of one environment, or all), newest first."""
        found: list[dict[str, Any]] = []
        for deployment_id in reversed(self.started):
            deployment = self.deployments[deployment_id]
            if environment is None or deployment["environment"] == environment:
                found.append(deployment)
                if len(found) == limit:
                    break
        return found


def _shared(value: Any) -> Any:
    # Interned, the same environment, image or step name is one object in every deployment.
    return sys.intern(value) if type(value) is str else value


def replay(records: Iterable[Record], *, detailed: int = 1000, batch: int = 64) -> State:
    """The state after applying `records` in order to an empty state."""
    state = State(deployments=Deployments(detailed=detailed, batch=batch))
    for record in records:
        fold(state, record)
    return state


def fold(state: State, record: Record) -> None:
    """Apply one audit record to `state`; unknown events and unknown ids change nothing."""
    seq = record.get("seq")
    if type(seq) is int:
        state.last_seq, state.last_hash = seq, record.get("hash")
    event, deployment_id = record.get("event"), record.get("deployment_id")
    if type(event) is not str or type(deployment_id) is not str:
        return
    if event == "deployment_started":
        _started(state, deployment_id, record)
    elif handler := _ON_DEPLOYMENT.get(event):
        found = state.deployments.live(deployment_id)
        # Nothing changes a deployment after its final record but a late cleanup note.
        if found is not None and (found["state"] == "running" or handler is _cleanup):
            handler(state, found, record)
            found["audit_head"] = {"seq": seq, "hash": record.get("hash")}
            state.deployments.settle()


def _started(state: State, deployment_id: str, record: Record) -> None:
    if deployment_id in state.deployments:
        return  # an id is started once; a replayed duplicate must not reset it
    steps = [
        {
            "action": _shared(step.get("action")),
            "name": _shared(step.get("name")),
            "state": "pending",
            "started_at": None,
            "finished_at": None,
            "message": "",
        }
        for step in record.get("steps") or ()
        if isinstance(step, dict)
    ]
    environment = _shared(record.get("environment"))
    state.deployments.add(
        {
            "id": deployment_id,
            "environment": environment,
            "image": _shared(record.get("image")),
            "tag": _shared(record.get("tag")),
            "digest": None,
            "actor": _shared(record.get("actor")),
            "origin": _origin(record.get("origin")),
            "state": "running",
            "created_at": record.get("time"),
            "finished_at": None,
            "container": _shared(record.get("container")),
            "env_names": record.get("env_names") or [],
            "public_env": record.get("public_env") or [],
            "steps": steps,
            "error": None,
            "logs": [],
            "audit_head": {"seq": record.get("seq"), "hash": record.get("hash")},
        }
    )
    state.started.append(deployment_id)
    oidc = record.get("github_oidc")
    if isinstance(oidc, dict) and type(oidc.get("jti")) is str:
        state.oidc_jtis.add(oidc["jti"])
    if type(environment) is str:
        state.last_by_env[environment] = deployment_id
    state.running = deployment_id


def _origin(origin: Any) -> Any:
    """A record's origin; one written before origins were marked is the caller's claim."""
    if isinstance(origin, dict) and "verified" not in origin:
        return {**origin, "verified": False}
    return origin


def _step(deployment: dict[str, Any], record: Record) -> dict[str, Any] | None:
    action, steps = record.get("step"), deployment["steps"]
    step: dict[str, Any]
    for step in steps:
        if step["action"] == action:
            return step
    return None


def _step_started(state: State, deployment: dict[str, Any], record: Record) -> None:
    step = _step(deployment, record)
    if step is not None:
        step["state"], step["started_at"] = "running", record.get("time")


def _step_ended(state: State, deployment: dict[str, Any], record: Record) -> None:
    step = _step(deployment, record)
    if step is None:
        return
    step["state"] = "succeeded" if record["event"] == "step_succeeded" else "failed"
    step["finished_at"], step["message"] = record.get("time"), record.get("message", "")
    digest = record.get("digest") if record["event"] == "step_succeeded" else None
    if digest is not None:
        deployment["digest"] = digest
        image = deployment["image"]
        if type(image) is str:
            # The first digest seen for a tag is the reference a moved tag is caught by.
            state.digests.setdefault(image, digest)


def _cleanup(state: State, deployment: dict[str, Any], record: Record) -> None:
    cleanup = deployment.setdefault("cleanup", {"started_at": None, "finished_at": None})
    cleanup["container_id"] = record.get("container_id")
    cleanup["message"] = record.get("message", "")
    end = "started_at" if record["event"] == "cleanup_started" else "finished_at"
    cleanup[end] = record.get("time")


def _finished(state: State, deployment: dict[str, Any], record: Record) -> None:
    for step in deployment["steps"]:
        if step["state"] == "pending":
            step["state"] = "skipped"
    deployment["state"] = record.get("state", "failed")
    deployment["finished_at"] = record.get("time")
    deployment["error"] = record.get("error")
    deployment["logs"] = record.get("logs") or []
    _ended(state, deployment)


def _interrupted(state: State, deployment: dict[str, Any], record: Record) -> None:
    time, message = record.get("time"), record.get("message", "")
    steps = deployment["steps"]
    running = [s["action"] for s in steps if s["state"] == "running"]
    started = [s["action"] for s in steps if s["started_at"] is not None]
    culprit = running[0] if running else started[-1] if started else "pull"
    for step in steps:
        if step["state"] == "running":
            step["state"], step["finished_at"], step["message"] = "failed", time, message
        elif step["state"] == "pending":
            step["state"] = "skipped"
    deployment["state"], deployment["finished_at"] = "interrupted", time
    deployment["error"] = {"step": culprit, "message": message}
    _ended(state, deployment)


def _ended(state: State, deployment: dict[str, Any]) -> None:
    """What every final record changes beyond the deployment: the counts, the newest, the digests kept."""
    if state.running == deployment["id"]:
        state.running = None
    environment, outcome = deployment["environment"], deployment["state"]
    if type(environment) is not str or type(outcome) is not str:
        return
    key = (environment, outcome)
    state.finished[key] = state.finished.get(key, 0) + 1
    if type(deployment["finished_at"]) is str:
        state.last_finished_at[key] = deployment["finished_at"]
    state.last_finished_by_env[environment] = deployment["id"]
    digest = deployment["digest"]
    if outcome == "succeeded" and type(digest) is str:
        kept = state.succeeded_digests.setdefault(environment, [])
        if digest in kept:
            kept.remove(digest)
        kept.append(digest)
        del kept[:-KEPT_DIGESTS]


_ON_DEPLOYMENT: dict[str, Callable[[State, dict[str, Any], Record], None]] = {
    "step_started": _step_started,
    "step_succeeded": _step_ended,
    "step_failed": _step_ended,
    "cleanup_started": _cleanup,
    "cleanup_finished": _cleanup,
    "deployment_finished": _finished,
    "deployment_interrupted": _interrupted,
}
