"""The four steps as data: each turns the plan and what Docker shows now into the actions it would take.

The executor performs these actions; a dry run prints them. No step decides anything at run time that
its actions do not already say, so what a dry run shows is what a deploy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config import Environment
from agent.dockerio import Observed
from runner.plan import Plan

Kind = Literal["pull", "stop", "remove", "create", "start", "wait_stable", "nothing"]
STOPPABLE = ("running", "restarting", "paused")


@dataclass(frozen=True)
class Action:
    """One thing to do against Docker (or a reasoned no-op), with everything it needs except secret values."""

    kind: Kind
    description: str
    done: str
    options: Mapping[str, Any] = field(default_factory=dict)


def pull(plan: Plan, *, known_digest: str | None) -> list[Action]:
    timeout = plan.step("pull")["timeout"]
    guard = (
        f"; the tag must still name {known_digest}, as when it was first deployed"
        if known_digest
        else "; first deploy of this tag: its digest will be recorded"
    )
    return [
        Action(
            "pull",
            f"pull {plan.image} from the registry (at most {timeout} s){guard}",
            f"pulled {plan.image}",
            {"repository": plan.repository, "tag": plan.tag, "timeout": timeout, "known_digest": known_digest},
        )
    ]


def stop_remove(plan: Plan, *, current: Observed) -> list[Action]:
    grace = plan.step("stop_remove")["stop_timeout"]
    if current.state == "absent":
        nothing = f"no container named {current.name}: nothing to stop or remove"
        return [Action("nothing", nothing, nothing)]
    actions = []
    if current.state in STOPPABLE:
        actions.append(
            Action(
                "stop",
                f"stop {current.name} ({current.state}, {current.image}; SIGTERM, SIGKILL after {grace} s)",
                f"stopped {current.name}",
                {"container": current.id, "timeout": grace},
            )
        )
    actions.append(
        Action(
            "remove", f"remove {current.name} ({current.image})", f"removed {current.name}", {"container": current.id}
        )
    )
    return actions


def start(
    plan: Plan, *, environment: Environment, restart_policy: str, env_names: list[str], deployment_id: str
) -> list[Action]:
    binds = [m.bind() for m in environment.volumes]
    labels = {
        "deployplan.deployment-id": deployment_id,
        "deployplan.environment": environment.name,
        "deployplan.tag": plan.tag,
    }
    mounts = ", ".join(binds) if binds else "no volumes"
    return [
        Action(
            "create",
            f"create {environment.container} from {plan.image} with {mounts}, restart policy {restart_policy}, "
            f"variables {', '.join(env_names) or 'none'}",
            f"created {environment.container} from {plan.image}",
            {
                "name": environment.container,
                "image": plan.image,
                "binds": binds,
                "restart_policy": restart_policy,
                "labels": labels,
                "env_names": env_names,
            },
        ),
        Action(
            "start",
            f"start {environment.container}",
            f"started {environment.container}",
            {"name": environment.container},
        ),
    ]


def verify(plan: Plan, *, container: str) -> list[Action]:
    options = plan.step("verify")
    return [
        Action(
            "wait_stable",
            f"within {options['timeout']} s, {container} must be running (and healthy, if the image has a "
            f"healthcheck) and stay up without a restart for {options['stable_for']} s",
            f"{container} is running and stayed up for {options['stable_for']} s",
            {"container": container, "timeout": options["timeout"], "stable_for": options["stable_for"]},
        )
    ]
