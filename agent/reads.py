"""What the agent answers without changing anything: status, deployments, history, the audit log, runtime logs."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import docker.errors

from agent.auditlog import AuditError
from agent.config import Config
from agent.containerlogs import read_logs
from agent.dockerio import DOCKER_ERRORS, DockerAccess
from agent.errors import AuditBroken, DockerUnavailable, NotFound
from agent.ledger import Ledger
from agent.recovery import reconcile
from agent.state import State
from agent.threadshares import LongPolls
from runner import __version__
from runner.core.facts import Observed
from runner.core.secrets import Masker
from runner.core.shapes import DiskDict, EnvironmentStatusDict, LastDeploymentDict, StatusDict

AUDIT_PAGE, AUDIT_PAGE_BYTES = 1000, 1024 * 1024
# A long poll ends well before a tunnel's 100 s response limit.
MAX_WAIT = 25.0
# /v1/logs: each line and the whole answer bounded in bytes, whatever the runtime writes.
LOG_LINE_BYTES, LOG_TOTAL_BYTES = 16 * 1024, 1024 * 1024


def state_dir_disk(path: Path) -> DiskDict | None:
    """Free space on the state directory's filesystem (where the audit log grows), for `deployplan check`; None
    when it cannot be measured."""
    try:
        return {"state_dir_free_bytes": shutil.disk_usage(path).free}
    except OSError:
        return None


@dataclass
class Reads:
    """The read side of the API, one per worker process."""

    config: Config
    ledger: Ledger
    docker: DockerAccess
    lock_path: Path
    long_polls: LongPolls = field(default_factory=LongPolls)

    def status(self, env: str | None) -> StatusDict:
        names = [self.served(env)] if env is not None else list(self.config.environments)
        reconcile(self.ledger, self.lock_path)
        running, last = self.ledger.read(lambda s: (s.running, last_deployments(s, names)))
        observed, docker_ok = self.docker.observe_all({n: self.config.environments[n].container for n in names})
        return {
            "agent": {
                "version": __version__,
                "docker": "reachable" if docker_ok else "unreachable",
                "audit": "broken" if self.ledger.broken else "ok",
                "audit_problem": self.ledger.broken,
                "deploy_in_progress": running,
                "disk": state_dir_disk(self.config.state_dir),
            },
            "environments": {name: environment_entry(observed[name], last[name]) for name in names},
        }

    def deployment(self, deployment_id: str, *, wait: float = 0.0, after: int | None = None) -> dict[str, Any]:
        """One deployment; with `wait`, answered as soon as it changes past `after` (its audit_head seq), or when
        the wait ends (long polling: a follower learns each step the moment it is recorded). When half of the
        worker's threads already wait, it answers at once, as wait=0: no reader can hold every thread."""
        reconcile(self.ledger, self.lock_path)

        def version(s: State) -> tuple[int, str] | None:
            found = s.deployment(deployment_id)
            return None if found is None else (found["audit_head"]["seq"], found["state"])

        if wait > 0:
            with self.long_polls.slot() as may_wait:
                if may_wait:
                    now = self.ledger.read(version)
                    since = after if after is not None else (now[0] if now else 0)
                    self.ledger.wait(version, lambda v: v is None or v[1] != "running" or v[0] > since, timeout=wait)
        found = self.ledger.read(lambda s: copy.deepcopy(s.deployment(deployment_id)))
        if found is None:
            raise NotFound(f"no deployment {deployment_id!r}")
        return found

    def history(self, env: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest deployments, newest first, without their log tails."""
        if env is not None:
            self.served(env)
        # Copied under the ledger's lock: another thread's fold may change a deployment meanwhile.
        return self.ledger.read(
            lambda s: [{k: copy.deepcopy(v) for k, v in d.items() if k != "logs"} for d in s.history(env, limit)]
        )

    def audit_records(self, after: int) -> tuple[list[dict[str, Any]], bool]:
        """Records with a seq above `after`, oldest first: at most AUDIT_PAGE of them and about AUDIT_PAGE_BYTES;
        and whether more may follow (ask again from the last seq)."""
        self.ledger.read(lambda s: None)  # catch up, so the index covers the whole file
        try:
            return self.ledger.audit.page(
                self.ledger.offset_before(after + 1), after=after, limit=AUDIT_PAGE, max_bytes=AUDIT_PAGE_BYTES
            )
        except AuditError as e:
            raise AuditBroken(str(e)) from e

    def logs(self, env: str, *, tail: int, since: float | None) -> dict[str, Any]:
        """The environment's container output, stdout and stderr in order, masked as a deployment's log tail."""
        container = self.config.environments[self.served(env)].container
        answer: dict[str, Any] = {
            "environment": env,
            "container": container,
            "state": "absent",
            "lines": [],
            "truncated": False,
        }
        try:
            with self.docker.connect(timeout=30) as client:
                try:
                    attrs = client.inspect_container(container)
                except docker.errors.NotFound:
                    return answer
                answer["state"] = attrs["State"].get("Status", "unknown")
                # Which container this is: a follower sees the runtime replaced by a deploy when these change.
                answer["container_id"] = attrs["Id"]
                answer["deployment_id"] = (attrs["Config"].get("Labels") or {}).get("deployplan.deployment-id")
                found = read_logs(
                    client,
                    attrs["Id"],
                    tail=tail,
                    since=since,
                    masker=self._masker(attrs),
                    line_limit=LOG_LINE_BYTES,
                    total_limit=LOG_TOTAL_BYTES,
                )
        except docker.errors.APIError as e:
            raise DockerUnavailable(f"Docker cannot show the logs of {container}: {e.explanation or e}") from e
        except DOCKER_ERRORS as e:
            raise DockerUnavailable(f"Docker is unreachable: {e}") from e
        answer["lines"] = [{"time": line.time, "stream": line.stream, "text": line.text} for line in found.lines]
        answer["truncated"] = found.truncated
        return answer

    def _masker(self, attrs: dict[str, Any]) -> Masker:
        """The values to mask, read from the container itself: those its deploy request sent and did not declare
        public. A container the audit log does not know (not ours, or its deployment unknown) has every value
        masked."""
        values = dict(item.partition("=")[::2] for item in attrs["Config"].get("Env") or [])
        labels = attrs["Config"].get("Labels") or {}
        deployment_id = labels.get("deployplan.deployment-id", "")
        found = self.ledger.read(lambda s: s.deployment(deployment_id)) if deployment_id else None
        if found is None:
            return Masker(values.values())
        secret = set(found["env_names"]) - set(found["public_env"])
        return Masker(value for name, value in values.items() if name in secret)

    def served(self, env: str) -> str:
        """`env`, or NotFound when this agent does not serve it."""
        if env not in self.config.environments:
            raise NotFound(f"this agent does not serve the environment {env!r}")
        return env


def last_deployments(state: State, names: list[str]) -> dict[str, LastDeploymentDict | None]:
    """Each environment's last deployment, as `last_deployment` of /v1/status (new dicts: safe outside the lock)."""
    return {
        name: cast(LastDeploymentDict | None, state.deployment_summary(state.last_by_env.get(name))) for name in names
    }


def environment_entry(current: Observed, last: LastDeploymentDict | None) -> EnvironmentStatusDict:
    """One environment of /v1/status."""
    return {
        "container": current.name,
        "state": current.state,
        "image": current.image,
        "digest": current.digest,
        "started_at": current.started_at,
        "restart_count": current.restart_count,
        "last_deployment": last,
    }
