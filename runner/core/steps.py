"""The four steps as data: each builder turns the plan and the facts into the actions it would take.

This table is the one description of the steps: the agent's deploy performs these actions, the agent's dry run
shows them with everything it knows, a local dry run shows them from the plan alone, and docs/agent.md is
checked against them. No step decides anything at run time that its actions do not already say, so what a
dry run shows is what a deploy does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.core.facts import Facts
from runner.core.plan import Plan

Kind = Literal["pull", "stop", "remove", "create", "start", "wait_stable", "nothing"]
STOPPABLE = ("running", "restarting", "paused")


@dataclass(frozen=True)
class Action:
    """One thing to do against Docker (or a reasoned no-op), with everything it needs except secret values."""

    kind: Kind
    description: str
    done: str
    options: Mapping[str, Any] = field(default_factory=dict)


def pull(plan: Plan, facts: Facts) -> list[Action]:
    timeout = plan.pull.timeout
    if not facts.digest_known:
        guard = "; refused if the tag now names another digest than when it was first deployed"
    elif facts.known_digest:
        guard = f"; the tag must still name {facts.known_digest}, as when it was first deployed"
    else:
        guard = "; first deploy of this tag: its digest will be recorded"
    return [
        Action(
            "pull",
            f"pull {plan.image} from the registry (at most {timeout} s){guard}",
            f"pulled {plan.image}",
            {"repository": plan.repository, "tag": plan.tag, "timeout": timeout, "known_digest": facts.known_digest},
        )
    ]


def stop_remove(plan: Plan, facts: Facts) -> list[Action]:
    grace = plan.stop_remove.stop_timeout
    current = facts.current
    if current is None:
        text = (
            f"stop the {plan.environment} container (SIGTERM, SIGKILL after {grace} s) and remove it, if there is one"
        )
        return [Action("nothing", text, text)]
    if current.state == "absent":
        nothing = f"no container named {current.name}: nothing to stop or remove"
        return [Action("nothing", nothing, nothing)]
    actions = []
    # With no grace, stopping is killing: the forced remove kills and removes in one engine call.
    if current.state in STOPPABLE and grace > 0:
        actions.append(
            Action(
                "stop",
                f"stop {current.name} ({current.state}, {current.image}; SIGTERM, SIGKILL after {grace} s)",
                f"stopped {current.name}",
                {"container": current.id, "timeout": grace},
            )
        )
    killed = " (SIGKILL: stop_timeout is 0)" if current.state in STOPPABLE and grace == 0 else ""
    actions.append(
        Action(
            "remove",
            f"remove {current.name} ({current.image}){killed}",
            f"removed {current.name}",
            {"container": current.id},
        )
    )
    return actions


def start(plan: Plan, facts: Facts) -> list[Action]:
    target = facts.target
    variables = ", ".join(facts.env_names) or "none"
    if target is None:
        text = (
            f"create and start a new {plan.environment} container from {plan.image} with the server's name, volumes, "
            f"restart policy and log settings, and the variables {variables}"
        )
        return [Action("nothing", text, text)]
    labels = {
        "deployplan.deployment-id": facts.deployment_id or "(assigned when deployed)",
        "deployplan.environment": target.environment,
        "deployplan.tag": plan.tag,
    }
    mounts = ", ".join(target.binds) if target.binds else "no volumes"
    return [
        Action(
            "create",
            f"create {target.container} from {plan.image} with {mounts}, restart policy {target.restart_policy}, "
            f"{target.describe_logs()}, variables {variables}",
            f"created {target.container} from {plan.image}",
            {
                "name": target.container,
                "image": plan.image,
                "binds": list(target.binds),
                "restart_policy": target.restart_policy,
                "log_config": target.log_config,
                "labels": labels,
                "env_names": list(facts.env_names),
            },
        ),
        Action("start", f"start {target.container}", f"started {target.container}", {"name": target.container}),
    ]


def verify(plan: Plan, facts: Facts) -> list[Action]:
    options = plan.verify
    container = facts.target.container if facts.target else "the container"
    return [
        Action(
            "wait_stable",
            f"within {options.timeout} s, {container} must be running (and healthy, if the image has a "
            f"healthcheck) and stay up without a restart for {options.stable_for} s",
            f"{container} is running and stayed up for {options.stable_for} s",
            {"container": container, "timeout": options.timeout, "stable_for": options.stable_for},
        )
    ]


BUILDERS: dict[str, Callable[[Plan, Facts], list[Action]]] = {
    "pull": pull,
    "stop_remove": stop_remove,
    "start": start,
    "verify": verify,
}


def describe(plan: Plan, facts: Facts) -> list[tuple[str, str]]:
    """Every step with what it would do, in order: what both dry runs show."""
    return [(step, "; ".join(a.description for a in build(plan, facts))) for step, build in BUILDERS.items()]
