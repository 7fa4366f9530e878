"""Explicit pruning of old runtime images: never automatic, under the deploy lock, audited.

Candidates are the images on this Docker host that DEPLOY_AGENT_IMAGE_REPOSITORY names (by tag or by digest).
An image is kept when any container uses it (running or not, ours or not), or when its digest is one of the
newest K distinct digests that succeeded in an environment, for each environment. Only this repository's
references are removed: an image another repository also names stays on disk; other images are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import docker
import docker.errors

from agent.auditlog import AuditError
from agent.auth import require_deployer
from agent.config import Config
from agent.dockerio import DOCKER_ERRORS, DockerAccess
from agent.errors import AuditBroken, BadRequest, Busy, DockerUnavailable, Forbidden
from agent.ledger import Ledger
from agent.recovery import lock_for_change, reconcile

MAX_KEEP = 50
Client: TypeAlias = docker.APIClient  # a module-level name: inside Pruner, `docker` is its DockerAccess field


@dataclass(frozen=True)
class Candidate:
    """One image that this repository names, as the plan to prune sees it."""

    id: str
    references: tuple[str, ...]  # this repository's tags and digests
    digests: tuple[str, ...]  # sha256:..., of this repository
    size: int
    shared: bool  # another repository names it too: removing ours frees nothing

    def shown(self) -> str:
        return next((r for r in self.references if "@" not in r), self.references[0])


@dataclass
class PrunePlan:
    kept: list[dict[str, Any]] = field(default_factory=list)
    remove: list[Candidate] = field(default_factory=list)


def check_body(body: Any) -> tuple[int, bool]:
    """`{"keep": K, "dry_run": true|false}`, both required, nothing else; raises BadRequest with every finding."""
    details = []
    if not isinstance(body, dict):
        raise BadRequest(
            'the body must be {"keep": K, "dry_run": true|false}', [{"path": "$", "message": "not an object"}]
        )
    for key in sorted(set(body) - {"keep", "dry_run"}):
        details.append({"path": f"$.{key}"[:120], "message": "unknown key; allowed here: dry_run, keep"})
    keep, dry_run = body.get("keep"), body.get("dry_run")
    if type(keep) is not int or not 0 <= keep <= MAX_KEEP:
        details.append({"path": "$.keep", "message": f"required: a whole number from 0 to {MAX_KEEP}"})
    if type(dry_run) is not bool:
        details.append({"path": "$.dry_run", "message": "required: true (list only) or false (remove)"})
    if details:
        raise BadRequest("the prune request was refused; nothing was touched", details)
    return keep, dry_run  # type: ignore[return-value]


def candidates(images: list[Mapping[str, Any]], repository: str) -> list[Candidate]:
    """The images this repository names, with only this repository's references."""
    found = []
    for image in images:
        references = [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
        ours = tuple(r for r in references if r.startswith((f"{repository}:", f"{repository}@")))
        if not ours:
            continue
        digests = tuple(r.partition("@")[2] for r in ours if "@" in r)
        others = [r for r in references if r not in ours and r != "<none>:<none>" and r != "<none>@<none>"]
        found.append(Candidate(str(image["Id"]), ours, digests, int(image.get("Size") or 0), bool(others)))
    return sorted(found, key=lambda c: c.shown())


def plan_prune(
    found: list[Candidate],
    *,
    in_use: Mapping[str, str],
    succeeded: Mapping[str, list[str]],
    keep: int,
) -> PrunePlan:
    """Which candidates stay and why, which go. `in_use` maps image id to a container that uses it; `succeeded`
    holds each environment's distinct successful digests, oldest first."""
    newest = {
        digest: f"one of the newest {keep} successful digests of {env}"
        for env, digests in succeeded.items()
        for digest in (digests[-keep:] if keep else [])
    }
    plan = PrunePlan()
    for candidate in found:
        digest = candidate.digests[0] if candidate.digests else None
        reason = (
            f"used by container {in_use[candidate.id]}"
            if candidate.id in in_use
            else next((newest[d] for d in candidate.digests if d in newest), None)
        )
        if reason is not None:
            plan.kept.append({"image": candidate.shown(), "digest": digest, "reason": reason})
        else:
            plan.remove.append(candidate)
    return plan


@dataclass
class Pruner:
    """`POST /v1/prune`: list, or remove, the images a deploy no longer needs."""

    config: Config
    ledger: Ledger
    docker: DockerAccess
    lock_path: Path

    def prune(self, *, keep: int, dry_run: bool, actor: str) -> dict[str, Any]:
        """List the candidates; unless this is a dry run, take the deploy lock and remove them. Both answer 409
        while a deploy runs. A dry run is a read any identity may make: it takes no lock (it looks for a running
        deployment instead), so no reader can hold deploys off with it. Removing needs an identity listed for
        every served environment."""
        if dry_run:
            reconcile(self.ledger, self.lock_path)  # a deployment whose worker died is not running
            running = self.ledger.read(lambda s: s.running)
            if running is not None:
                raise Busy(f"deployment {running} is in progress: what it pulls and removes would change the answer")
            return self._prune(keep=keep, dry_run=True, actor=actor)
        try:
            require_deployer(self.config, actor, list(self.config.environments), what="prune images")
        except Forbidden as e:
            with contextlib.suppress(AuditError):
                self.ledger.append("prune_refused", deployment_id=None, actor=actor, reason=e.message)
            raise
        lock = lock_for_change(self.ledger, self.lock_path, refused="a prune is refused")
        try:
            return self._prune(keep=keep, dry_run=False, actor=actor)
        finally:
            lock.release()

    def _prune(self, *, keep: int, dry_run: bool, actor: str) -> dict[str, Any]:
        repository = self.config.image_repository
        succeeded = self.ledger.read(lambda s: {env: list(d) for env, d in s.succeeded_digests.items()})
        try:
            with self.docker.connect(timeout=60) as client:
                found = candidates(client.images(), repository)
                in_use = {c["ImageID"]: c["Names"][0].lstrip("/") for c in client.containers(all=True)}
                plan = plan_prune(found, in_use=in_use, succeeded=succeeded, keep=keep)
                answer = self._answer(plan, keep=keep, dry_run=dry_run)
                if not dry_run:
                    self._remove(client, plan, answer, actor=actor, keep=keep)
        except DOCKER_ERRORS as e:
            raise DockerUnavailable(f"Docker is unreachable: {e}") from e
        return answer

    def _remove(self, client: Client, plan: PrunePlan, answer: dict[str, Any], *, actor: str, keep: int) -> None:
        record = {"keep": keep, "remove": answer["remove"], "kept": answer["kept"]}
        try:
            self.ledger.append("prune_started", deployment_id=None, actor=actor, **record)
        except AuditError as e:
            raise AuditBroken(f"cannot write the audit log, so nothing was removed: {e}") from e
        answer["bytes"] = 0
        try:
            for candidate in plan.remove:
                try:
                    for reference in candidate.references:  # tags first, then digests: the last frees the image
                        with contextlib.suppress(docker.errors.NotFound):  # gone with the reference before it
                            client.remove_image(reference)
                except DOCKER_ERRORS as e:  # one image refused, or Docker gone midway: said, and on to the next
                    explained = getattr(e, "explanation", None) or e
                    answer["errors"].append({"image": candidate.shown(), "message": str(explained)})
                    continue
                answer["removed"].append(_entry(candidate))
                answer["bytes"] += 0 if candidate.shared else candidate.size
        finally:  # what was removed is recorded, whatever stopped the loop
            finished = {"removed": answer["removed"], "errors": answer["errors"], "bytes": answer["bytes"]}
            try:
                self.ledger.append("prune_finished", deployment_id=None, actor=actor, **finished)
            except AuditError as e:
                raise AuditBroken(f"images were removed but the audit log could not record it: {e}") from e

    @staticmethod
    def _answer(plan: PrunePlan, *, keep: int, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "keep": keep,
            "kept": plan.kept,
            "remove": [_entry(c) for c in plan.remove],
            "removed": [],
            "errors": [],
            "bytes": sum(0 if c.shared else c.size for c in plan.remove),
        }


def _entry(candidate: Candidate) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "image": candidate.shown(),
        "digest": candidate.digests[0] if candidate.digests else None,
        "size": 0 if candidate.shared else candidate.size,
        "references": list(candidate.references),
    }
    if candidate.shared:
        entry["note"] = "another repository names this image too: only this repository's references go"
    return entry
