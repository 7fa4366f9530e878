"""One deployment, top to bottom: pull, stop_remove, start, verify; each step audited before and after.

No retry and no rollback: when start or verify fails, the new container is stopped and kept for
inspection, and the deployment fails with the step, the reason and the container's last log lines.
Everything that comes from the container (its output, a healthcheck's, an exit message) is masked here,
before it is written anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.auditlog import AuditError
from agent.config import Config
from agent.containerlogs import read_logs
from agent.dockerio import DOCKER_ERRORS, observe
from agent.executor import ActionFailed, Executor
from agent.ledger import Ledger
from agent.lock import DeployLock
from agent.logs import Stopwatch, log
from agent.validate import DeployRequest
from runner.core import steps
from runner.core.facts import Facts, Observed
from runner.core.secrets import Masker
from runner.core.text import clip_line

# The tail kept with a failed deployment: its last lines, each and all of them bounded in bytes.
LOG_LINES, LOG_LINE_BYTES, LOG_TAIL_BYTES = 100, 2048, 32 * 1024
# A healthcheck's or the engine's own words in a step message: enough to act on, never a whole log.
MESSAGE_BYTES = 1024


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
    masker: Masker = field(init=False)

    def __post_init__(self) -> None:
        # The runtime's secret values and the server's registry password: a pull's failure quotes the registry.
        self.masker = self.request.masker(also=[self.config.registry_password])

    def run(self) -> None:
        """The four steps, in order; the failure path is right here."""
        plan = self.request.plan
        log("deployment running", deployment_id=self.id, environment=plan.environment, image=plan.image)
        try:
            self.step("pull", lambda: steps.pull(plan, self.facts(known_digest=True)))
            self.step("stop_remove", lambda: steps.stop_remove(plan, self.facts(current=self.ready_to_stop())))
            self.step("start", lambda: steps.start(plan, self.facts()))
            self.step("verify", lambda: steps.verify(plan, self.facts()))
        except StepFailed as failure:
            self.fail(failure)
        else:
            self.finish("succeeded", error=None)

    def facts(self, *, known_digest: bool = False, current: Observed | None = None) -> Facts:
        """What the step builders read besides the plan, as it is now."""
        image = self.request.plan.image
        return Facts(
            target=self.config.target(self.request.plan.environment),
            current=current,
            known_digest=self.ledger.read(lambda s: s.digests.get(image)) if known_digest else None,
            digest_known=known_digest,
            env_names=tuple(sorted(self.request.env)),
            deployment_id=self.id,
        )

    def step(self, name: str, build: Callable[[], list[steps.Action]]) -> None:
        """Build the step's actions from what Docker shows now, announce them in the audit log, perform them,
        record the outcome."""
        self.current_step = name
        try:
            actions = build()
        except StepFailed as e:  # what Docker shows could not be read: the step fails before any action
            self.record("step_started", step=name, actions=[])
            self.record("step_failed", step=name, message=e.message)
            raise
        self.record("step_started", step=name, actions=[a.description for a in actions])
        log("step started", deployment_id=self.id, step=name, actions=[a.description for a in actions])
        clock = Stopwatch()
        learned: dict[str, Any] = {}
        try:
            for action in actions:
                learned.update(self.executor.perform(action))
                self.container_id = learned.get("container_id", self.container_id)
        except ActionFailed as e:
            reason = self.foreign(str(e), cut=e.cut)
            self.record("step_failed", step=name, message=reason)
            log("step failed", deployment_id=self.id, step=name, reason=reason, duration_ms=clock.ms())
            raise StepFailed(name, reason) from e
        message = "; ".join(a.done for a in actions) + (f" ({learned['digest']})" if "digest" in learned else "")
        self.record("step_succeeded", step=name, message=message, **learned)
        log("step succeeded", deployment_id=self.id, step=name, duration_ms=clock.ms(), **learned)

    def foreign(self, text: str, *, cut: bool = False) -> str:
        """Text that may quote the container (a healthcheck's output, an exit message): masked, then bounded.
        `cut`: it ends where Docker cut the runtime's text, so the start of a secret there is masked too."""
        return clip_line(self.masker.mask(text, cut=cut) + ("..." if cut else ""), MESSAGE_BYTES)

    def record(self, event: str, **fields: Any) -> None:
        """One audit record of this deployment, written (fsynced) before what it announces."""
        self.ledger.append(event, deployment_id=self.id, actor=self.actor, **fields)

    def fail(self, failure: StepFailed) -> None:
        """Stop the new container (kept for inspection) so the runtime is not left running, then record why."""
        if self.container_id is not None:
            grace = self.request.plan.stop_remove.stop_timeout
            message = "stop the new container and keep it for inspection"
            self.record("cleanup_started", container_id=self.container_id, message=message)
            try:
                self.executor.stop_for_inspection(self.container_id, timeout=grace)
                outcome = "stopped; kept for inspection with restart policy 'no'"
            except ActionFailed as e:
                outcome = self.foreign(str(e))
            self.record("cleanup_finished", container_id=self.container_id, message=outcome)
        self.finish("failed", error={"step": failure.step, "message": failure.message})

    def finish(self, state: str, *, error: dict[str, str] | None) -> None:
        logs = self.container_logs()
        self.record("deployment_finished", state=state, error=error, logs=logs)
        plan = self.request.plan
        log(
            f"deployment {state}",
            deployment_id=self.id,
            environment=plan.environment,
            image=plan.image,
            error=error,
            container_logs=logs,
        )

    def ready_to_stop(self) -> Observed:
        """The current container, once the mount sources are known to be still there: a pull takes minutes, and a
        source removed meanwhile would fail the start after the stop."""
        environment = self.request.environment
        missing = environment.missing_sources()
        if missing:
            raise StepFailed("stop_remove", "; ".join(missing) + "; nothing was stopped")
        return self.observe()

    def observe(self) -> Observed:
        container = self.request.environment.container
        try:
            return observe(self.executor.client(), container)
        except DOCKER_ERRORS as e:
            raise StepFailed("stop_remove", f"Docker: cannot inspect {container}: {e}") from e

    def close(self) -> None:
        """Close the deployment's one Docker client (the executor's: its actions and its reads share it)."""
        self.executor.close()

    def container_logs(self) -> list[str]:
        """The new container's last lines, masked (a runtime may print its own configuration) and bounded."""
        if self.container_id is None:
            return []
        try:
            tail = read_logs(
                self.executor.client(),
                self.container_id,
                tail=LOG_LINES,
                masker=self.masker,
                line_limit=LOG_LINE_BYTES,
                total_limit=LOG_TAIL_BYTES,
            )
        except DOCKER_ERRORS as e:
            return [self.foreign(f"(the container's logs could not be read: {e})")]
        lines = [line.text for line in tail.lines]
        if tail.truncated:
            note = f"[cut: the tail keeps lines to {LOG_LINE_BYTES} bytes and {LOG_TAIL_BYTES // 1024} KiB in all]"
            lines.insert(0, note)
        return lines


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
        deployment.close()
        lock.release()
