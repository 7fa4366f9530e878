"""What the API does, behind thin views: status, deployments, the audit records, dry runs and deploys."""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from agent import steps
from agent.audit import AuditError, AuditLog
from agent.config import Config
from agent.deploy import Deployment, run_in_background
from agent.dockerio import DOCKER_ERRORS, DigestCache, Observed, connect, observe
from agent.errors import ApiError
from agent.executor import Executor
from agent.ledger import Ledger
from agent.lock import create_lock_file, try_lock
from agent.logs import log
from agent.state import State
from agent.validate import DeployRequest, check_request
from runner import __version__
from runner.secrets import Secret

AUDIT_PAGE = 1000
STATUS_DOCKER_TIMEOUT = 5


@dataclass
class Service:
    """The agent's core, one per worker process; all shared state lives in the state directory."""

    config: Config
    ledger: Ledger
    _local: threading.local = field(default_factory=threading.local)
    _digests: DigestCache = field(default_factory=DigestCache)

    @classmethod
    def open(cls, config: Config) -> Service:
        service = cls(config=config, ledger=Ledger(AuditLog(config.state_dir / "audit.jsonl")))
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            create_lock_file(service.lock_path)
        except OSError as e:
            # The agent still starts and answers status; every deploy is refused until the directory is usable.
            log("state directory not usable: deploys refused", level=logging.ERROR, reason=str(e))
        service.ledger.read(lambda s: None)  # replay the log: every record is verified as it is folded
        if service.ledger.broken:
            log(
                "audit log broken: deploys refused until an operator acts",
                level=logging.ERROR,
                reason=service.ledger.broken,
            )
        service.reconcile()
        return service

    @property
    def lock_path(self) -> Path:
        return self.config.state_dir / "deploy.lock"

    def reconcile(self) -> None:
        """A deployment with no final record, lock free: its worker died. Say so; resume nothing."""
        if self.ledger.read(lambda s: s.running) is None or self.ledger.broken:
            return
        try:
            lock = try_lock(self.lock_path)
        except OSError as e:
            log("cannot take the deploy lock to reconcile", level=logging.WARNING, reason=str(e))
            return
        if lock is None:
            return  # a live worker is running it
        try:
            self._mark_interrupted()
        finally:
            lock.release()

    def _mark_interrupted(self) -> None:
        running = self.ledger.read(lambda s: s.running)
        if running is not None:
            message = "the agent stopped during this deployment; nothing was resumed or restarted"
            self.ledger.append("deployment_interrupted", deployment_id=running, actor="deploy-agent", message=message)
            log("deployment interrupted", level=logging.WARNING, deployment_id=running)

    # -- reads

    def status(self, env: str | None) -> dict[str, Any]:
        if env is not None and env not in self.config.environments:
            raise ApiError(404, "not_found", f"this agent does not serve the environment {env!r}")
        self.reconcile()
        names = [env] if env else list(self.config.environments)
        running, last = self.ledger.read(lambda s: (s.running, self._last_deployments(s, names)))
        observed, docker_ok = self._observe_all(names)
        return {
            "agent": {
                "version": __version__,
                "docker": "reachable" if docker_ok else "unreachable",
                "audit": "broken" if self.ledger.broken else "ok",
                "audit_problem": self.ledger.broken,
                "deploy_in_progress": running,
            },
            "environments": {name: self._entry(observed[name], last[name]) for name in names},
        }

    def _observe_all(self, names: list[str]) -> tuple[dict[str, Observed], bool]:
        containers = {n: self.config.environments[n].container for n in names}
        try:
            client = self._status_client()
            return {n: observe(client, c, digests=self._digests) for n, c in containers.items()}, True
        except DOCKER_ERRORS as e:
            self._drop_status_client()
            log("docker unreachable", level=logging.WARNING, reason=str(e))
            return {n: Observed.unknown(c) for n, c in containers.items()}, False

    def _status_client(self) -> docker.APIClient:
        # One connection per request thread, kept: status is read often, and a new socket each time is slow.
        client: docker.APIClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(timeout=STATUS_DOCKER_TIMEOUT)
        return client

    def _drop_status_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            client.close()

    @staticmethod
    def _last_deployments(state: State, names: list[str]) -> dict[str, dict[str, Any] | None]:
        # deployment_summary builds a new dict of immutable values: safe to use outside the lock.
        return {name: state.deployment_summary(state.last_by_env.get(name)) for name in names}

    @staticmethod
    def _entry(current: Observed, last: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "container": current.name,
            "state": current.state,
            "image": current.image,
            "digest": current.digest,
            "started_at": current.started_at,
            "restart_count": current.restart_count,
            "last_deployment": last,
        }

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        self.reconcile()
        found = self.ledger.read(lambda s: copy.deepcopy(s.deployment(deployment_id)))
        if found is None:
            raise ApiError(404, "not_found", f"no deployment {deployment_id!r}")
        return found

    def audit_records(self, after: int) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        self.ledger.read(lambda s: None)  # catch up, so the index covers the whole file
        offset = self.ledger.offset_before(after + 1)
        try:
            while len(records) < AUDIT_PAGE:
                batch, offset = self.ledger.audit.read_from(offset, limit=AUDIT_PAGE * 10)
                if not batch:
                    break
                records.extend(r for r in batch if isinstance(r.get("seq"), int) and r["seq"] > after)
        except AuditError as e:
            raise ApiError(503, "audit_broken", str(e)) from e
        return records[:AUDIT_PAGE]

    # -- deploys

    def dry_run(self, request: DeployRequest) -> dict[str, Any]:
        plan, environment = request.plan, request.environment
        known_digest, last = self.ledger.read(
            lambda s: (s.digests.get(plan.image), self._last_deployments(s, [environment.name])[environment.name])
        )
        current, docker_ok = self._observe_all([environment.name])
        if not docker_ok:
            raise ApiError(503, "docker_unavailable", "Docker is unreachable: cannot tell what would change")
        actions = {
            "pull": steps.pull(plan, known_digest=known_digest),
            "stop_remove": steps.stop_remove(plan, current=current[environment.name]),
            "start": steps.start(
                plan,
                environment=environment,
                restart_policy=self.config.restart_policy,
                env_names=sorted(request.env),
                deployment_id="(assigned when deployed)",
            ),
            "verify": steps.verify(plan, container=environment.container),
        }
        return {
            "dry_run": True,
            "environment": environment.name,
            "container": environment.container,
            "image": plan.image,
            "volumes": [m.bind() for m in environment.volumes],
            "restart_policy": self.config.restart_policy,
            "env": sorted(request.env),
            "actions": [
                {"step": step, "description": "; ".join(a.description for a in acts)} for step, acts in actions.items()
            ],
            "current": self._entry(current[environment.name], last),
        }

    def deploy(self, request: DeployRequest, *, actor: str) -> dict[str, Any]:
        """Take the lock, record the deployment, start it in the background; answers before any step runs."""
        self.ledger.read(lambda s: None)  # catch up: a broken chain shows here
        if self.ledger.broken:
            raise ApiError(
                503,
                "audit_broken",
                f"deploys are refused until an operator repairs the audit log: {self.ledger.broken}",
            )
        self._require_docker()
        try:
            lock = try_lock(self.lock_path)
        except OSError as e:
            raise ApiError(503, "audit_broken", f"the state directory cannot be used, so nothing was done: {e}") from e
        if lock is None:
            running = self.ledger.read(lambda s: s.running)
            raise ApiError(
                409, "deploy_in_progress", f"another deploy is in progress ({running or 'starting'}); wait for it"
            )
        try:
            # Under the lock, before anything is done: the whole chain, old records included, must be intact.
            self.ledger.verify_all()
            if self.ledger.broken:
                raise ApiError(
                    503, "audit_broken", f"deploys are refused: the audit log is broken: {self.ledger.broken}"
                )
            self._mark_interrupted()
            deployment = self._start_record(request, actor=actor)
        except AuditError as e:
            lock.release()
            raise ApiError(503, "audit_broken", f"cannot write the audit log, so nothing was done: {e}") from e
        except BaseException:
            lock.release()
            raise
        threading.Thread(target=run_in_background, args=(deployment, lock), name=f"deploy-{deployment.id}").start()
        return {"deployment_id": deployment.id, "status_url": f"/v1/deployments/{deployment.id}"}

    def _require_docker(self) -> None:
        try:
            with connect(timeout=STATUS_DOCKER_TIMEOUT) as client:
                client.ping()
        except DOCKER_ERRORS as e:
            raise ApiError(503, "docker_unavailable", f"Docker is unreachable; nothing was done: {e}") from e

    def _start_record(self, request: DeployRequest, *, actor: str) -> Deployment:
        plan, environment = request.plan, request.environment
        deployment_id = uuid.uuid4().hex[:12]
        self.ledger.append(
            "deployment_started",
            deployment_id=deployment_id,
            actor=actor,
            environment=environment.name,
            image=plan.image,
            tag=plan.tag,
            container=environment.container,
            plan=plan.data["plan"],
            steps=[{"action": s["action"], "name": s["name"]} for s in plan.data["steps"]],
            env_names=sorted(request.env),
        )
        log(
            "deployment accepted",
            deployment_id=deployment_id,
            actor=actor,
            environment=environment.name,
            image=plan.image,
        )
        auth: dict[str, str | Secret] | None = None
        if self.config.registry_username and self.config.registry_password:
            auth = {"username": self.config.registry_username, "password": self.config.registry_password}
        executor = Executor(connect=connect, env=request.env, registry_auth=auth)
        return Deployment(
            id=deployment_id, actor=actor, request=request, config=self.config, ledger=self.ledger, executor=executor
        )

    def check(self, body: Any, *, actor: str) -> DeployRequest:
        """The request that passed every check, or ApiError 422 with every finding (a refused deploy, not a dry
        run, is recorded in the audit log when the log can take it; the refusal stands either way)."""
        request, findings = check_request(body, self.config)
        if request is not None:
            return request
        details = [f.as_detail() for f in findings]
        if isinstance(body, dict) and body.get("dry_run") is not True:
            plan = body.get("plan")
            environment = plan.get("environment") if isinstance(plan, dict) else None
            try:
                self.ledger.append(
                    "deploy_refused",
                    deployment_id=None,
                    actor=actor,
                    environment=environment if isinstance(environment, str) else None,
                    reason=[f"{d['path']}: {d['message']}" for d in details][:20],
                )
            except AuditError as e:
                log("refusal not audited", level=logging.WARNING, reason=str(e))
        message = f"the deploy was refused: {len(details)} finding(s), nothing was touched"
        raise ApiError(422, "plan_refused", message, details)
