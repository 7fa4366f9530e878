"""Deploy admission: check a request, authorize it, answer a dry run, or take the lock and start the deployment."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.auditlog import AuditError
from agent.auth import GITHUB_OIDC_HEADER, may_deploy, require_deployer
from agent.config import Config
from agent.deploy import Deployment, run_in_background
from agent.dockerio import DOCKER_ERRORS, DockerAccess
from agent.errors import (
    AgentError,
    AuditBroken,
    AuthUnavailable,
    Busy,
    DockerUnavailable,
    Forbidden,
    Refused,
    ServerNotReady,
    Unauthorized,
)
from agent.executor import Executor
from agent.ledger import Ledger
from agent.logs import log
from agent.reads import environment_entry, last_deployments
from agent.recovery import lock_for_change, released_on_failure
from agent.registry import ask_registry, not_asked, registry_auth
from agent.threadshares import RegistryLookups
from agent.validate import DeployRequest, check_request
from runner.core.facts import Facts
from runner.core.steps import describe
from runner.core.text import shorten

# A refusal's audit record names at most this many findings, each cut short: a caller must not be able to grow
# the log by more than a few KiB per request, whatever the body holds.
AUDITED_FINDINGS = 20

if TYPE_CHECKING:
    from agent.oidc import GithubOidcVerifier


@dataclass
class Admission:
    """The write side of `POST /v1/deploy`, one per worker process."""

    config: Config
    ledger: Ledger
    docker: DockerAccess
    lock_path: Path
    # With DEPLOY_AGENT_GITHUB_OIDC=required: the checker of the deploy job's GitHub OIDC token.
    github: GithubOidcVerifier | None = None
    # The dry runs of this worker waiting on the registry: at most a quarter of its threads.
    registry_lookups: RegistryLookups = field(default_factory=RegistryLookups)

    def check(self, body: Any, *, actor: str) -> DeployRequest:
        """The request that passed every check, or Refused with every finding (a refused deploy, not a dry run,
        is recorded in the audit log when the log can take it; the refusal stands either way)."""
        request, findings = check_request(body, self.config)
        if request is not None:
            return request
        details = [f.as_detail() for f in findings]
        error = Refused(f"the deploy was refused: {len(details)} finding(s), nothing was touched", details)
        if isinstance(body, dict) and body.get("dry_run") is not True:
            plan = body.get("plan")
            self._audit_refusal(
                error, actor=actor, environment=plan.get("environment") if isinstance(plan, dict) else None
            )
        raise error

    def authorize(self, request: DeployRequest, *, actor: str) -> None:
        """Reads and dry runs are open to every authenticated identity; a deploy needs the right to that
        environment (Forbidden, audited, touching nothing)."""
        if request.dry_run:
            return
        try:
            require_deployer(
                self.config, actor, [request.plan.environment], what=f"deploy to {request.plan.environment}"
            )
        except Forbidden as e:
            self._audit_refusal(e, actor=actor, environment=request.plan.environment)
            raise

    def trust(self, request: DeployRequest, *, actor: str, token: str | None) -> DeployRequest:
        """With DEPLOY_AGENT_GITHUB_OIDC=required, a real deploy's GitHub OIDC token, checked before anything is
        touched (401, 403 or 503, each audited with the token's claims, never the token); the deployment's origin
        is then built from the verified claims, and the request's own is dropped. Its `jti` is checked under the
        deploy lock, in `deploy`."""
        if request.dry_run or self.config.github_oidc != "required":
            return request
        if self.github is None:
            raise AuthUnavailable("the GitHub OIDC settings are not loaded")  # config makes this impossible
        try:
            verified = self.github.verify(token, environment=request.plan.environment)
        except (Unauthorized, Forbidden, AuthUnavailable) as e:
            self._audit_refusal(
                e, actor=actor, environment=request.plan.environment, github_oidc=getattr(e, "claims", None)
            )
            raise
        return replace(request, origin=verified.origin(), github_oidc=verified.audited())

    def _may_deploy(self, request: DeployRequest, *, actor: str, token: str | None) -> dict[str, Any]:
        """For a dry run: whether this caller could deploy it, as `GET /v1/whoami` says (the identity's right), and,
        when the dry run carries a GitHub OIDC token under `required`, whether that token would be accepted now.

        Without a token a dry run speaks for the identity only: a dry run is often made where no token exists (a
        laptop, a step before the deploy job asks for one), and the real deploy checks the token anyway.
        """
        environment = request.plan.environment
        answer: dict[str, Any] = {"may_deploy": may_deploy(self.config, actor, environment)}
        answer["github_oidc"] = self.config.github_oidc
        if not (answer["may_deploy"] and token and self.github is not None):
            return answer
        try:
            verified = self.github.verify(token, environment=environment)
            if self.ledger.read(lambda s: verified.jti in s.oidc_jtis):
                raise Forbidden(_reused(verified.jti))
        except (Unauthorized, Forbidden, AuthUnavailable) as e:  # a dry run answers; it needs no keys itself
            answer.update(may_deploy=False, may_deploy_reason=e.message)
        return answer

    def dry_run(self, request: DeployRequest, *, actor: str, token: str | None) -> dict[str, Any]:
        """What a deploy would do now, from the same step builders the deploy uses, whether the registry has the
        tag (asked with the server's credentials, nothing pulled) and whether this caller may deploy; touches
        nothing. A server-owned precondition the deploy would refuse on (a missing mount source) is refused the
        same way, 503 `server_not_ready`, but not audited: a dry run is a question."""
        plan, environment = request.plan, request.environment
        known_digest, last = self.ledger.read(
            lambda s: (s.digests.get(plan.image), last_deployments(s, [environment.name])[environment.name])
        )
        current, docker_ok = self.docker.observe_all({environment.name: environment.container})
        if not docker_ok:
            raise DockerUnavailable("Docker is unreachable: cannot tell what would change")
        missing = self._missing_mount_sources(request)
        if missing is not None:
            raise missing
        target = self.config.target(environment.name)
        facts = Facts(
            target=target,
            current=current[environment.name],
            known_digest=known_digest,
            digest_known=True,
            env_names=tuple(sorted(request.env)),
        )
        return {
            "dry_run": True,
            "environment": environment.name,
            "container": environment.container,
            "image": plan.image,
            "volumes": list(target.binds),
            "restart_policy": target.restart_policy,
            "runtime_logs": target.describe_logs(),
            "env": sorted(request.env),
            "actions": [{"step": step, "description": text} for step, text in describe(plan, facts)],
            "current": environment_entry(current[environment.name], last),
            **self._may_deploy(request, actor=actor, token=token),
            "registry": self._ask_registry(plan.image),
        }

    def _ask_registry(self, image: str) -> dict[str, Any]:
        """The registry's answer, unless a quarter of this worker's threads already wait on it: then at once,
        not asked (a stalled registry must not let dry runs, which any reader may send, fill every thread)."""
        lookups = self.registry_lookups
        with lookups.slot() as may_ask:
            if not may_ask:
                return not_asked(image, slots=lookups.slots, threads=lookups.threads)
            return ask_registry(self.docker.connect, image, auth=registry_auth(self.config))

    def deploy(self, request: DeployRequest, *, actor: str) -> dict[str, Any]:
        """Take the lock, record the deployment, start it in the background; answers before any step runs."""
        self.ledger.read(lambda s: None)  # catch up: a broken chain shows here
        if self.ledger.broken:
            raise AuditBroken(f"deploys are refused until an operator repairs the audit log: {self.ledger.broken}")
        try:
            self.docker.ping()
        except DOCKER_ERRORS as e:
            raise DockerUnavailable(f"Docker is unreachable; nothing was done: {e}") from e
        try:
            lock = lock_for_change(self.ledger, self.lock_path, refused="deploys are refused")
        except Busy:
            running = self.ledger.read(lambda s: s.running)
            raise Busy(f"another deploy or prune is in progress ({running or 'a prune'}); wait for it") from None
        with released_on_failure(lock):
            self._once(request, actor=actor)
            self._require_mount_sources(request, actor=actor)
            deployment, record = self._start_record(request, actor=actor)
            # Should the thread not start, the lock is released here and the recorded deployment, with no final
            # record and no worker, is marked interrupted by the next read.
            threading.Thread(target=run_in_background, args=(deployment, lock), name=f"deploy-{deployment.id}").start()
        return {
            "deployment_id": deployment.id,
            "status_url": f"/v1/deployments/{deployment.id}",
            "audit_head": {"seq": record["seq"], "hash": record["hash"]},
        }

    def _require_mount_sources(self, request: DeployRequest, *, actor: str) -> None:
        """Every bind source of the environment is there, checked again right before the pull: one removed since
        the agent started refuses the deploy (audited, nothing touched) instead of failing after the stop."""
        error = self._missing_mount_sources(request)
        if error is not None:
            self._audit_refusal(error, actor=actor, environment=request.environment.name)
            raise error

    @staticmethod
    def _missing_mount_sources(request: DeployRequest) -> ServerNotReady | None:
        """The refusal of a deploy (and of its dry run) whose environment lacks a bind source, naming the variable
        and each path; None when every source is there."""
        environment = request.environment
        variable = environment.volumes_variable
        missing = environment.missing_sources()
        if not missing:
            return None
        return ServerNotReady(
            f"the server is not ready to deploy {environment.name}: {len(missing)} mount source(s) missing; "
            "nothing was touched",
            [{"path": variable, "message": m.partition(": ")[2]} for m in missing],
        )

    def _start_record(self, request: DeployRequest, *, actor: str) -> tuple[Deployment, dict[str, Any]]:
        plan, environment = request.plan, request.environment
        deployment_id = uuid.uuid4().hex[:12]
        record = self.ledger.append(
            "deployment_started", deployment_id=deployment_id, actor=actor, **request.started_record()
        )
        log(
            "deployment accepted",
            deployment_id=deployment_id,
            actor=actor,
            environment=environment.name,
            image=plan.image,
            origin=request.origin,
        )
        executor = Executor(connect=self.docker.connect, env=request.env, registry_auth=registry_auth(self.config))
        deployment = Deployment(
            id=deployment_id,
            actor=actor,
            request=request,
            config=self.config,
            ledger=self.ledger,
            executor=executor,
        )
        return deployment, record

    def _once(self, request: DeployRequest, *, actor: str) -> None:
        """Under the deploy lock: a GitHub OIDC token is good for one deploy. Every worker appends a deployment's
        record under this lock, so the audit log (caught up here) knows every `jti` ever accepted, across workers
        and restarts."""
        jti = (request.github_oidc or {}).get("jti")
        if not isinstance(jti, str) or not self.ledger.read(lambda s: jti in s.oidc_jtis):
            return
        error = Forbidden(
            _reused(jti), [{"path": f"{GITHUB_OIDC_HEADER}.jti", "message": "this token was accepted before"}]
        )
        self._audit_refusal(error, actor=actor, environment=request.plan.environment, github_oidc=request.github_oidc)
        raise error

    def _audit_refusal(
        self, error: AgentError, *, actor: str, environment: Any, github_oidc: dict[str, Any] | None = None
    ) -> None:
        """`deploy_refused` with the actor and a bounded account of why; a log that cannot take it is only noted."""
        reasons = [shorten(f"{d['path']}: {d['message']}") for d in error.details[:AUDITED_FINDINGS]] or [
            shorten(error.message)
        ]
        try:
            self.ledger.append(
                "deploy_refused",
                deployment_id=None,
                actor=actor,
                environment=shorten(environment, 40) if isinstance(environment, str) else None,
                reason=reasons,
                findings=len(error.details),
                **({"github_oidc": github_oidc} if github_oidc is not None else {}),
            )
        except AuditError as e:
            log("refusal not audited", level=logging.WARNING, reason=str(e))


def _reused(jti: str) -> str:
    return (
        f"the GitHub OIDC token does not allow this deploy: jti is {shorten(jti, 80)!r}, expected a token never "
        "accepted before (each token is good for one deploy: start a new workflow run)"
    )
