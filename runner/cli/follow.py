"""`deployplan apply`: send the deploy once, follow it step by step, then verify it through /v1/status."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from runner.cli.client import AgentClient, NotDelivered
from runner.cli.errors import AgentRefused, AgentUnreachable, DeployFailed
from runner.cli.github import command
from runner.core.plan import Plan
from runner.core.secrets import Masker, Secret, reveal
from runner.core.shapes import DeploymentDict
from runner.core.text import printable
from runner.core.times import duration

# Each long poll asks the agent to answer as soon as the deployment changes, or after this many seconds: well
# under a tunnel's 100 s response limit.
WAIT = 20
# Between two reads when the agent answers without waiting (an older agent), or after contact was lost.
PAUSE = 0.25
# Beyond the plan's own timeouts: the start step, the agent's bookkeeping and the network.
DEADLINE_MARGIN = 120


def deadline_seconds(plan: Plan) -> int:
    """How long apply follows a deploy at most, from the plan's own timeouts."""
    return plan.pull.timeout + plan.stop_remove.stop_timeout + plan.verify.timeout + DEADLINE_MARGIN


def longest_deadline() -> int:
    """The same for a deployment followed without its plan (`follow`): the longest timeouts the plan schema
    allows, read from it."""
    from runner.core.schema import PLAN_SCHEMA

    pull, stop_remove, _, verify = PLAN_SCHEMA["properties"]["steps"]["prefixItems"]
    maxima = (pull["properties"]["timeout"], stop_remove["properties"]["stop_timeout"], verify["properties"]["timeout"])
    return sum(int(limit["maximum"]) for limit in maxima) + DEADLINE_MARGIN


def _plain(text: str, *styles: str) -> str:
    return text


@dataclass
class Printer:
    """Step lines as they happen: plain lines, or one live line on a terminal; GitHub groups in GitHub mode.

    `style` (Console.style) adds colour and emphasis on a terminal: step names bold, success green, failure red.
    """

    out: TextIO
    github: bool
    masker: Masker
    live: bool = False
    style: Callable[..., str] = _plain
    _seen: dict[str, str] = field(default_factory=dict)

    def line(self, text: str, *parts: tuple[str, tuple[str, ...]]) -> None:
        """`text` masked and made printable, then each (text, styles) part the same way, styled."""
        if self.live:
            self.out.write("\r\033[K")
        whole = printable(self.masker.mask(text + "".join(t for t, _ in parts)))
        pieces = [(printable(self.masker.mask(t)), styles) for t, styles in ((text, ()), *parts)]
        # Masked piece by piece, a secret across two pieces would show: then the line goes out masked whole, plain.
        if "".join(p for p, _ in pieces) == whole:
            whole = "".join(self.style(p, *styles) for p, styles in pieces)
        self.out.write(whole + "\n")
        self.out.flush()

    def steps(self, deployment: DeploymentDict) -> None:
        """Print what changed since the last look: a step that started, a step that ended."""
        steps = deployment.get("steps", [])
        for number, step in enumerate(steps, start=1):
            state, previous = step.get("state"), self._seen.get(step["action"], "pending")
            if state == previous:
                continue
            self._seen[step["action"]] = state
            title = f"[{number}/{len(steps)}] {step['action']}: {step['name']}"
            styled = (f"[{number}/{len(steps)}] ", ()), (f"{step['action']}", ("bold",)), (f": {step['name']}", ())
            if state == "skipped":
                self.line("", *styled, (": skipped", ("dim",)))
                continue
            if previous == "pending":
                if self.github:
                    self.line(command("group", title))
                self.line("", *styled, (" ...", ()))
            if state in ("succeeded", "failed"):
                message = f" ({step['message']})" if step.get("message") else ""
                colour = ("green",) if state == "succeeded" else ("red", "bold")
                self.line("", *styled, (": ", ()), (str(state), colour), (f" in {duration(step)}{message}", ()))
                if self.github:
                    self.line("::endgroup::")
        running = next((s for s in steps if s.get("state") == "running"), None)
        if self.live and running is not None:
            self.out.write(f"\r\033[K  {running['action']} running ...")
            self.out.flush()


def request_body(
    plan: Plan, env: dict[str, str | Secret], *, dry_run: bool, origin: dict[str, str] | None
) -> dict[str, Any]:
    """The deploy request: the rendered plan, the variables, which of them are not secret, where it comes from."""
    body: dict[str, Any] = {
        "plan": plan.data,
        "env": {k: reveal(v) for k, v in env.items()},
        "public_env": sorted(k for k, v in env.items() if not isinstance(v, Secret)),
        "dry_run": dry_run,
    }
    if origin:
        body["origin"] = origin
    return body


def send(
    client: AgentClient,
    plan: Plan,
    *,
    env: dict[str, str | Secret],
    confirm: str | None,
    origin: dict[str, str] | None,
    headers: dict[str, Secret] | None = None,
) -> tuple[str, int | None]:
    """POST the deploy exactly once (`headers`: the GitHub OIDC token); returns the deployment id and the seq of
    its first audit record."""
    body = request_body(plan, env, dry_run=False, origin=origin)
    if confirm is not None:
        body["confirm"] = confirm
    try:
        accepted = client.post("/v1/deploy", body, headers=headers)
    except NotDelivered:
        raise  # it never reached the agent: nothing to warn about
    except AgentUnreachable as e:
        raise AgentUnreachable(
            f"{e}\nthe deploy may or may not have been accepted: check `deployplan status` before trying again"
        ) from e
    deployment_id = accepted.get("deployment_id")
    if not isinstance(deployment_id, str):
        raise AgentUnreachable("the agent accepted the deploy but sent no deployment_id")
    seq = (accepted.get("audit_head") or {}).get("seq")
    return deployment_id, seq if isinstance(seq, int) else None


def follow(
    client: AgentClient,
    deployment_id: str,
    *,
    printer: Printer,
    deadline: float,
    on_lost: Callable[[str], None],
    after: int | None = None,
) -> DeploymentDict:
    """Follow the deployment until it ends, each step printed the moment the agent records it (long polling
    from the record `after`); a dropped connection is retried (reads only, never the deploy)."""
    lost = False
    while True:
        wait = max(0, min(WAIT, int(deadline - time.monotonic())))
        try:
            deployment = client.deployment(deployment_id, wait=wait, after=after)
            lost = False
        except AgentRefused as e:
            # The deploy was accepted and runs on: this is not a refusal (exit 3) but an outcome we cannot see.
            raise DeployFailed(
                f"deployment {deployment_id} was accepted but cannot be followed: {e}\n"
                "its outcome is unknown here: check `deployplan status` and the agent's log"
            ) from e
        except AgentUnreachable as e:
            if not lost:
                on_lost(str(e))
            lost = True
            deployment = None
        if deployment is not None:
            printer.steps(deployment)
            if deployment.get("state") != "running":
                return deployment
            seen = (deployment.get("audit_head") or {}).get("seq")
            moved, after = seen != after, seen
        if time.monotonic() > deadline:
            raise DeployFailed(
                f"deployment {deployment_id} did not finish within the plan's timeouts; it may still be running at "
                "the agent: check `deployplan status` and the agent's log"
            )
        if deployment is None or not moved:
            time.sleep(PAUSE)  # contact lost, or an agent that answered without news: do not spin


@dataclass(frozen=True)
class Target:
    """What the deploy was asked to run where: the plan's, for apply; what the deployment says, for follow."""

    environment: str
    tag: str
    image: str


def verify_status(client: AgentClient, target: Target, deployment: DeploymentDict) -> str | None:
    """None when /v1/status shows the environment running exactly the deployed image and digest, else why not."""
    environment, image = target.environment, target.image
    entry: dict[str, Any] = dict(client.status(environment).get("environments", {}).get(environment) or {})
    if entry.get("state") != "running":
        return f"/v1/status shows {environment} {entry.get('state')}, not running"
    if entry.get("image") != image:
        return f"/v1/status shows {environment} running {entry.get('image')}, not {image}"
    if entry.get("digest") != deployment.get("digest"):
        return f"/v1/status shows digest {entry.get('digest')}, but the deploy pulled {deployment.get('digest')}"
    return None
