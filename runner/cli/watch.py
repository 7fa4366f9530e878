"""Watching a deployment to its end, for `apply` and `follow` alike: its steps, the check through /v1/status, the
outcome (and the job summary), and how to re-attach when the operator stops watching."""

from __future__ import annotations

import time
from typing import Any

from runner.cli.client import AgentClient
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, AgentUnreachable, DeployFailed, Exit
from runner.cli.follow import Printer, Target, follow, verify_status
from runner.cli.github import append_summary, command, summary_markdown
from runner.cli.refusal import not_followed
from runner.core.secrets import Masker
from runner.core.shapes import DeploymentDict
from runner.core.text import printable


def watch(
    console: Console,
    client: AgentClient,
    deployment_id: str,
    *,
    target: Target,
    masker: Masker,
    seconds: float,
    printer: Printer | None = None,
    after: int | None = None,
) -> int:
    """Follow the deployment to its end (at most `seconds`), verify a success through /v1/status, report it.

    Exit 0 deployed and verified; a failure raises DeployFailed. Ctrl-C (or SIGTERM) stops watching, says how to
    re-attach, and goes on as KeyboardInterrupt: the deploy goes on at the agent."""
    printer = printer or new_printer(console, masker)
    try:
        deployment = follow(
            client,
            deployment_id,
            printer=printer,
            deadline=time.monotonic() + seconds,
            on_lost=lambda reason: console.error(f"lost contact with the agent ({reason}); still following"),
            after=after,
        )
    except DeployFailed as e:  # accepted, but lost: no outcome to report, and still a trace in the job
        if console.github:
            not_followed(console, target.environment, target.tag, e, masker)
        raise
    except KeyboardInterrupt:
        console.error(
            f"stopped following; deployment {deployment_id} goes on at the agent. Follow it with\n"
            f"  deployplan follow {deployment_id} --agent {client.url}\n"
            f"or see what runs with\n"
            f"  deployplan status --agent {client.url} --env {target.environment}"
        )
        raise
    problem = None
    if deployment.get("state") == "succeeded":
        try:
            problem = verify_status(client, target, deployment)
        except (AgentUnreachable, AgentRefused) as e:
            # The deploy ran: exit 3 would say nothing happened. It is a deploy that could not be verified.
            problem = f"/v1/status could not be read to verify it: {e}"
    logs = [printable(masker.mask(line)) for line in deployment.get("logs", [])]
    return outcome(console, target, deployment, problem=problem, logs=logs, masker=masker)


def new_printer(console: Console, masker: Masker) -> Printer:
    return Printer(
        out=console.out, github=console.github, masker=masker, live=console.out.isatty(), style=console.style
    )


def outcome(
    console: Console,
    target: Target,
    deployment: DeploymentDict,
    *,
    problem: str | None,
    logs: list[str],
    masker: Masker,
) -> int:
    """Report how the deploy ended (and write the job summary); a failure raises DeployFailed."""
    succeeded = deployment.get("state") == "succeeded"
    head = deployment.get("audit_head")
    if head:
        # The chain's head leaves the server here: kept in the job log and summary, it anchors `audit verify`.
        console.print(
            f"audit head {head['seq']}:{head['hash']} (check the server's log against it with "
            f"`deployplan audit verify audit.jsonl --anchor {head['seq']}:{head['hash']}`)"
        )
    if console.github:
        verified = "yes" if succeeded and problem is None else "no"
        summary = summary_markdown(deployment, verified=verified, logs=logs, mask=masker.mask)
        append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), summary)
    if not succeeded:
        error: dict[str, Any] = dict(deployment.get("error") or {})
        if logs:
            console.print(f"the container's last {len(logs)} log lines:")
            for line in logs:
                console.print(f"  | {line}")
        state, step = deployment.get("state"), error.get("step")
        problem = f"{target.environment} {target.tag}: {state} in step {step}: {error.get('message')}"
    elif problem is not None:
        problem = f"the deploy finished but {problem}"
    if problem is not None:
        problem = printable(masker.mask(problem))
        if console.github:
            console.print(command("error", problem))
        raise DeployFailed(problem)
    done = printable(f"deployed and verified: {target.environment} runs {target.image} ({deployment.get('digest')})")
    console.print(console.style(done, "green", "bold"))
    return Exit.OK
