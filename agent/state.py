"""All agent state, as a pure fold over the audit log's records.

Memory: a deployment in the API shape takes ~3.7 KB, so the ~125k deployments of a million
records would take ~450 MB. `State.deployments` is therefore a mapping that keeps the `detailed`
most recently started or changed deployments (1000: the running one and each environment's
latest, in practice) as API-shaped dicts, and archives older ones losslessly in batches of
`batch` as `{id: deployment}` JSON, zlib-compressed (~100 bytes each: a batch shares keys,
names, images and time prefixes). Looking up an archived id decompresses its batch (~0.5 ms)
and gives exactly what a fold without archiving would hold; a record naming an archived
deployment brings it back first. A million records replay in ~75 MB. Repeated strings
(environment, image, tag, actor, container, step names) are interned; records are never copied.
"""

from __future__ import annotations

import json
import sys
import zlib
from _json import encode_basestring, make_encoder
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

# JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode minus its per-call setup
# and cycle check (a deployment is a tree): archiving is a third of the cost of a fold.
_encode = make_encoder(None, json.JSONEncoder().default, encode_basestring, None, ":", ",", False, False, True)
_SUMMARY = ("id", "state", "tag", "finished_at")
Record = dict[str, Any]


class Deployments(Mapping[str, dict[str, Any]]):
    """Every deployment by id, in the API shape (treat them as read-only); old ones archived."""

    def __init__(self, *, detailed: int = 1000, batch: int = 64) -> None:
        self.detailed, self.batch = detailed, batch
        self.recent: dict[str, dict[str, Any]] = {}
        self._archived: dict[str, int] = {}  # id -> index in _batches
        self._batches: list[bytes] = []

    def __getitem__(self, deployment_id: str) -> dict[str, Any]:
        # The archive first: settle() and live() keep an id in one place or the other at every
        # instant in that order, so a reader in another thread never misses it mid-fold.
        index = self._archived.get(deployment_id)
        if index is None:
            return self.recent[deployment_id]
        found: dict[str, Any] = json.loads(zlib.decompress(self._batches[index]))[deployment_id]
        return found

    def __contains__(self, deployment_id: object) -> bool:
        return deployment_id in self.recent or deployment_id in self._archived

    def __iter__(self) -> Iterator[str]:
        yield from self._archived
        yield from self.recent

    def __len__(self) -> int:
        return len(self._archived) + len(self.recent)

    def live(self, deployment_id: str) -> dict[str, Any] | None:
        """The deployment as the dict a fold changes, brought back from the archive if need be."""
        found = self.recent.get(deployment_id)
        if found is None and deployment_id in self._archived:
            # Its copy in the batch goes stale: the index no longer points to it.
            found = self.recent[deployment_id] = self[deployment_id]
            del self._archived[deployment_id]
        return found

    def add(self, deployment: dict[str, Any]) -> None:
        """Hold a new deployment; archive the oldest ones once there are enough of them."""
        self.recent[deployment["id"]] = deployment
        self.settle()

    def settle(self) -> None:
        """Archive the oldest batch if recent ones exceed `detailed` by a whole batch."""
        if len(self.recent) < self.detailed + self.batch:
            return
        ids = list(islice(self.recent, self.batch))
        packed = "".join(_encode({i: self.recent[i] for i in ids}, 0)).encode("utf-8")
        self._batches.append(zlib.compress(packed, 1))  # level 1: nearly all of the gain
        self._archived.update(dict.fromkeys(ids, len(self._batches) - 1))
        for i in ids:
            del self.recent[i]


@dataclass(kw_only=True)
class State:
    """Everything the agent knows, rebuilt from the audit log alone."""

    deployments: Deployments = field(default_factory=Deployments)
    last_by_env: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    running: str | None = None
    last_seq: int = 0

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        """`GET /v1/deployments/<id>`: one deployment, recent or archived, or None."""
        return self.deployments.get(deployment_id)

    def deployment_summary(self, deployment_id: str | None) -> dict[str, Any] | None:
        """The `last_deployment` entry of `/v1/status`."""
        found = None if deployment_id is None else self.deployment(deployment_id)
        return None if found is None else {key: found[key] for key in _SUMMARY}


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
        state.last_seq = seq
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
            "state": "running",
            "created_at": record.get("time"),
            "finished_at": None,
            "container": _shared(record.get("container")),
            "steps": steps,
            "error": None,
            "logs": [],
        }
    )
    if type(environment) is str:
        state.last_by_env[environment] = deployment_id
    state.running = deployment_id


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
    if state.running == deployment["id"]:
        state.running = None


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
    if state.running == deployment["id"]:
        state.running = None


_ON_DEPLOYMENT: dict[str, Callable[[State, dict[str, Any], Record], None]] = {
    "step_started": _step_started,
    "step_succeeded": _step_ended,
    "step_failed": _step_ended,
    "cleanup_started": _cleanup,
    "cleanup_finished": _cleanup,
    "deployment_finished": _finished,
    "deployment_interrupted": _interrupted,
}
