"""What the API does, behind thin views: status, deployments, the audit records, dry runs and deploys."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from agent import steps
from agent.audit import AuditError, AuditLog
from agent.config import Config
from agent.deploy import Deployment, run_in_background
from agent.dockerio import DOCKER_ERRORS, Observed, connect, observe
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

    @classmethod
    def open(cls, config: Config) -> Service:
        service = cls(config=config, ledger=Ledger(AuditLog(config.state_dir / "audit.jsonl")))
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            create_lock_file(service.lock_path)
        except OSError as e:
            # The agent still starts and answers status; every deploy is refused until the directory is usable.
            log("state directory not usable: deploys refused", level=logging.ERROR, reason=str(e))
        service.ledger.refresh()
        if service.ledger.broken:
            log(
                "audit log broken: deploys refused until an operator acts",
                level=logging.ERROR,
                reason=service.ledger.broken,
            )
        service.reconcile()
        return service

    @property
    def lock_path(self) -> Any:
        return self.config.state_dir / "deploy.lock"

    def reconcile(self) -> None:
        """A deployment with no final record, lock free: its worker died. Say so; resume nothing."""
        state = self.ledger.refresh()
        if state.running is None or self.ledger.broken:
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
        state = self.ledger.refresh()
        if state.running is not None:
            message = "the agent stopped during this deployment; nothing was resumed or restarted"
            self.ledger.append(
                "deployment_interrupted", deployment_id=state.running, actor="deploy-agent", message=message
            )
            log("deployment interrupted", level=logging.WARNING, deployment_id=state.running)

    # -- reads

    def status(self, env: str | None) -> dict[str, Any]:
        if env is not None and env not in self.config.environments:
            raise ApiError(404, "not_found", f"this agent does not serve the environment {env!r}")
        self.reconcile()
        state = self.ledger.refresh()
        names = [env] if env else list(self.config.environments)
        observed, docker_ok = self._observe_all(names)
        return {
            "agent": {
                "version": __version__,
                "docker": "reachable" if docker_ok else "unreachable",
                "audit": "broken" if self.ledger.broken else "ok",
                "audit_problem": self.ledger.broken,
                "deploy_in_progress": state.running,
            },
            "environments": {name: self._entry(observed[name], state, name) for name in names},
        }

    def _observe_all(self, names: list[str]) -> tuple[dict[str, Observed], bool]:
        containers = {n: self.config.environments[n].container for n in names}
        try:
            with connect(timeout=STATUS_DOCKER_TIMEOUT) as client:
                return {n: observe(client, c) for n, c in containers.items()}, True
        except DOCKER_ERRORS as e:
            log("docker unreachable", level=logging.WARNING, reason=str(e))
            return {n: Observed.unknown(c) for n, c in containers.items()}, False

    @staticmethod
    def _entry(current: Observed, state: State, env: str) -> dict[str, Any]:
        last = state.last_by_env.get(env)
        return {
            "container": current.name,
            "state": current.state,
            "image": current.image,
            "digest": current.digest,
            "started_at": current.started_at,
            "restart_count": current.restart_count,
            "last_deployment": state.deployment_summary(last) if last else None,
        }

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        self.reconcile()
        found = self.ledger.refresh().deployment(deployment_id)
        if found is None:
            raise ApiError(404, "not_found", f"no deployment {deployment_id!r}")
        return found

    def audit_records(self, after: int) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        offset = 0
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
        state = self.ledger.refresh()
        current, docker_ok = self._observe_all([environment.name])
        if not docker_ok:
            raise ApiError(503, "docker_unavailable", "Docker is unreachable: cannot tell what would change")
        actions = {
            "pull": steps.pull(plan, known_digest=state.digests.get(plan.image)),
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
            "current": self._entry(current[environment.name], state, environment.name),
        }

    def deploy(self, request: DeployRequest, *, actor: str) -> dict[str, Any]:
        """Take the lock, record the deployment, start it in the background; answers before any step runs."""
        if self.ledger.refresh() and self.ledger.broken:
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
            running = self.ledger.refresh().running
            raise ApiError(
                409, "deploy_in_progress", f"another deploy is in progress ({running or 'starting'}); wait for it"
            )
        try:
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

    def refuse(self, findings: list[dict[str, str]], *, actor: str, environment: Any) -> None:
        """Record a refused deploy (not dry runs) when the log can take it; the refusal stands either way."""
        try:
            self.ledger.append(
                "deploy_refused",
                deployment_id=None,
                actor=actor,
                environment=environment if isinstance(environment, str) else None,
                reason=[f"{f['path']}: {f['message']}" for f in findings][:20],
            )
        except AuditError as e:
            log("refusal not audited", level=logging.WARNING, reason=str(e))

    def check(self, body: Any) -> tuple[DeployRequest | None, list[dict[str, str]]]:
        request, findings = check_request(body, self.config)
        return request, [f.as_detail() for f in findings]
