"""One deployment, top to bottom: pull, stop_remove, start, verify; each step audited before and after.

No retry and no rollback: when start or verify fails, the new container is stopped and kept for
inspection, and the deployment fails with the step, the reason and the container's last log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import steps
from agent.audit import AuditError
from agent.config import Config
from agent.dockerio import DOCKER_ERRORS, Observed, connect, last_log_lines, observe
from agent.executor import ActionFailed, Executor
from agent.ledger import Ledger
from agent.lock import DeployLock
from agent.logs import Stopwatch, log
from agent.validate import DeployRequest
from runner.secrets import redact

LOG_LINES = 100


class StepFailed(Exception):
    """A step failed; carries the step's action name and the reason."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        self.message = message
        super().__init__(f"{step}: {message}")


@dataclass
class Deployment:
    """A deploy that was accepted (its `deployment_started` record is written) and now runs."""

    id: str
    actor: str
    request: DeployRequest
    config: Config
    ledger: Ledger
    executor: Executor
    container_id: str | None = field(default=None)
    current_step: str = field(default="pull")

    def run(self) -> None:
        """The four steps, in order; the failure path is right here."""
        plan, environment = self.request.plan, self.request.environment
        log("deployment running", deployment_id=self.id, environment=environment.name, image=plan.image)
        try:
            self.step("pull", lambda: steps.pull(plan, known_digest=self.known_digest()))
            self.step("stop_remove", lambda: steps.stop_remove(plan, current=self.observe()))
            self.step(
                "start",
                lambda: steps.start(
                    plan,
                    environment=environment,
                    restart_policy=self.config.restart_policy,
                    env_names=sorted(self.request.env),
                    deployment_id=self.id,
                ),
            )
            self.step("verify", lambda: steps.verify(plan, container=environment.container))
        except StepFailed as failure:
            self.fail(failure)
        else:
            self.finish("succeeded", error=None)

    def step(self, name: str, build: Callable[[], list[steps.Action]]) -> None:
        """Build the step's actions from what Docker shows now, announce them in the audit log, perform them,
        record the outcome."""
        self.current_step = name
        try:
            actions = build()
        except StepFailed as e:  # what Docker shows could not be read: the step fails before any action
            self.ledger.append("step_started", deployment_id=self.id, actor=self.actor, step=name, actions=[])
            self.ledger.append("step_failed", deployment_id=self.id, actor=self.actor, step=name, message=e.message)
            raise
        self.ledger.append(
            "step_started", deployment_id=self.id, actor=self.actor, step=name, actions=[a.description for a in actions]
        )
        log("step started", deployment_id=self.id, step=name, actions=[a.description for a in actions])
        clock = Stopwatch()
        learned: dict[str, Any] = {}
        try:
            for action in actions:
                learned.update(self.executor.perform(action))
                self.container_id = learned.get("container_id", self.container_id)
        except ActionFailed as e:
            self.ledger.append("step_failed", deployment_id=self.id, actor=self.actor, step=name, message=str(e))
            log("step failed", deployment_id=self.id, step=name, reason=str(e), duration_ms=clock.ms())
            raise StepFailed(name, str(e)) from e
        message = "; ".join(a.done for a in actions) + (f" ({learned['digest']})" if "digest" in learned else "")
        self.ledger.append(
            "step_succeeded", deployment_id=self.id, actor=self.actor, step=name, message=message, **learned
        )
        log("step succeeded", deployment_id=self.id, step=name, duration_ms=clock.ms(), **learned)

    def fail(self, failure: StepFailed) -> None:
        """Stop the new container (kept for inspection) so the runtime is not left running, then record why."""
        if self.container_id is not None:
            grace = self.request.plan.step("stop_remove")["stop_timeout"]
            self.ledger.append(
                "cleanup_started",
                deployment_id=self.id,
                actor=self.actor,
                container_id=self.container_id,
                message="stop the new container and keep it for inspection",
            )
            try:
                self.executor.stop_for_inspection(self.container_id, timeout=grace)
                outcome = "stopped; kept for inspection with restart policy 'no'"
            except ActionFailed as e:
                outcome = str(e)
            self.ledger.append(
                "cleanup_finished",
                deployment_id=self.id,
                actor=self.actor,
                container_id=self.container_id,
                message=outcome,
            )
        self.finish("failed", error={"step": failure.step, "message": failure.message})

    def finish(self, state: str, *, error: dict[str, str] | None) -> None:
        logs = self.container_logs()
        self.ledger.append(
            "deployment_finished", deployment_id=self.id, actor=self.actor, state=state, error=error, logs=logs
        )
        log(
            f"deployment {state}",
            deployment_id=self.id,
            environment=self.request.environment.name,
            image=self.request.plan.image,
            error=error,
            container_logs=logs,
        )

    def known_digest(self) -> str | None:
        image = self.request.plan.image
        return self.ledger.read(lambda s: s.digests.get(image))

    def observe(self) -> Observed:
        try:
            with connect(timeout=30) as client:
                return observe(client, self.request.environment.container)
        except DOCKER_ERRORS as e:
            raise StepFailed("stop_remove", f"Docker: cannot inspect {self.request.environment.container}: {e}") from e

    def container_logs(self) -> list[str]:
        if self.container_id is None:
            return []
        try:
            with connect(timeout=30) as client:
                lines = last_log_lines(client, self.container_id, lines=LOG_LINES)
        except DOCKER_ERRORS as e:
            return [f"(the container's logs could not be read: {e})"]
        # A runtime may print its own configuration: its secret values never reach the log, audit or API.
        secrets = self.request.secret_values()
        return [redact(line, secrets) for line in lines]


def run_in_background(deployment: Deployment, lock: DeployLock) -> None:
    """The thread body: run, and whatever happens, release the deploy lock."""
    try:
        deployment.run()
    except AuditError as e:
        # The next record could not be written, so nothing more may be done: the deployment stays without a
        # final record and is marked interrupted at the next start or deploy. A new container that was
        # started (its start was audited) must not be left running unverified: stop it, say so in the log.
        log(
            "deployment stopped: audit log not writable",
            level=logging.ERROR,
            deployment_id=deployment.id,
            reason=str(e),
        )
        if deployment.container_id is not None:
            try:
                deployment.executor.stop_for_inspection(deployment.container_id, timeout=10)
                log("new container stopped for inspection", level=logging.ERROR, container_id=deployment.container_id)
            except ActionFailed as stop_error:
                log("new container could not be stopped", level=logging.ERROR, reason=str(stop_error))
    except Exception:
        log("deployment crashed", level=logging.ERROR, exc_info=True, deployment_id=deployment.id)
        try:
            deployment.fail(StepFailed(deployment.current_step, "internal error in the agent; see its log"))
        except Exception:
            log(
                "deployment could not record its failure",
                level=logging.ERROR,
                exc_info=True,
                deployment_id=deployment.id,
            )
    finally:
        lock.release()
