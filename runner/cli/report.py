"""Text the operator reads: the status and history tables, and the dry-run's change against what runs now."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runner.cli.oidc import what_to_change
from runner.core.secrets import Secret
from runner.core.shapes import DeploymentDict
from runner.core.text import printable
from runner.core.times import duration


def status_table(status: Mapping[str, Any]) -> list[str]:
    """What runs where, one row per environment, after one line about the agent."""
    agent = status.get("agent", {})
    lines = [
        f"agent {agent.get('version')}: docker {agent.get('docker')}, audit {agent.get('audit')}, "
        f"deploy in progress: {agent.get('deploy_in_progress') or 'none'}"
    ]
    if agent.get("audit_problem"):
        lines.append(f"  audit problem: {agent['audit_problem']}")
    header = ("ENV", "CONTAINER", "STATE", "IMAGE", "DIGEST", "STARTED", "RESTARTS", "LAST DEPLOYMENT")
    rows = [header]
    for name, env in (status.get("environments") or {}).items():
        last = env.get("last_deployment")
        last_text = (
            f"{last['id']} {last['state']} {last['tag']} {last.get('finished_at') or ''}".strip() if last else "-"
        )
        digest = env.get("digest") or "-"
        rows.append(
            (
                name,
                env.get("container") or "-",
                env.get("state") or "-",
                env.get("image") or "-",
                digest[:19] + "..." if len(digest) > 22 else digest,
                env.get("started_at") or "-",
                str(env.get("restart_count", "-")),
                last_text,
            )
        )
    return lines + _columns([tuple(printable(cell) for cell in row) for row in rows])


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def dry_run_report(answer: dict[str, Any], *, values: dict[str, str | Secret]) -> list[str]:
    """The agent's dry-run answer: server-owned settings, variables (secrets masked), actions, and the change."""
    lines = [
        f"the agent would deploy {answer.get('image')} to {answer.get('environment')}:",
        f"  container       {answer.get('container')} (server-owned)",
        f"  volumes         {', '.join(answer.get('volumes') or []) or 'none'} (server-owned)",
        f"  restart policy  {answer.get('restart_policy')} (server-owned)",
        "  variables",
    ]
    # Secret values print as ****; public ones (Secret: no) as they are, controls shown as escapes.
    lines += [
        f"    {printable(name)}={printable(str(values.get(name, '(not sent)')))}" for name in answer.get("env", [])
    ]
    lines.append("actions, in order:")
    lines += [f"  {n}. {a['step']:<12} {a['description']}" for n, a in enumerate(answer.get("actions", []), start=1)]
    lines.append("change against what runs now:")
    lines += change_lines(answer.get("current") or {}, image=str(answer.get("image")))
    lines += readiness_lines(answer)
    return lines


@dataclass(frozen=True)
class Readiness:
    """What a dry-run answer says about the deploy it stands for, read once for `dry-run --agent` and `check`.

    registry: `found` (said: its digest), `busy` (not asked: the agent was busy; ask again), `missing` (said: the
    registry's or engine's words), `unknown` (an agent whose dry run does not ask). may: `yes`, `identity` (this
    caller is not listed), `token` (the deploy job's GitHub OIDC token would be refused; token_reason says why),
    `unknown` (the agent does not say)."""

    registry: Literal["found", "busy", "missing", "unknown"]
    said: str
    may: Literal["yes", "identity", "token", "unknown"]
    token_reason: str


def readiness(answer: Mapping[str, Any]) -> Readiness:
    registry = answer.get("registry")
    kind: Literal["found", "busy", "missing", "unknown"]
    if not isinstance(registry, Mapping):
        kind, said = "unknown", "this agent's dry run does not ask the registry"
    elif registry.get("found") is True:
        kind, said = "found", str(registry.get("digest"))
    elif registry.get("busy") is True:
        kind, said = "busy", str(registry.get("reason") or "the agent is busy and did not ask the registry")
    else:
        kind, said = "missing", str(registry.get("reason") or "the agent gives no reason")
    may_deploy, reason = answer.get("may_deploy"), str(answer.get("may_deploy_reason") or "")
    may: Literal["yes", "identity", "token", "unknown"]
    if may_deploy is True:
        may = "yes"
    elif may_deploy is False:
        may = "token" if reason else "identity"
    else:
        may = "unknown"
    return Readiness(registry=kind, said=printable(said), may=may, token_reason=printable(reason))


def readiness_lines(answer: dict[str, Any]) -> list[str]:
    """Whether the registry has the tag (asked by the agent with its own credentials) and this caller may deploy."""
    ready = readiness(answer)
    found = {
        "found": f"has {answer.get('image')} ({ready.said})",
        "busy": f"NOT ASKED: {ready.said}",
        "missing": f"NOT FOUND: {ready.said}",
        "unknown": f"not known: {ready.said}",
    }[ready.registry]
    allowed = {"yes": "yes", "identity": "NO", "token": "NO", "unknown": "the agent did not say"}[ready.may]
    lines = [f"registry        {found}", f"may deploy      {allowed} (this caller, to {answer.get('environment')})"]
    if ready.token_reason:
        lines.append(f"                {ready.token_reason}")
    return lines


def refusal(answer: dict[str, Any]) -> str | None:
    """Why a deploy of this dry run would not go through (the registry lacks the tag, the caller may not deploy,
    the deploy job's GitHub OIDC token would be refused: what to change), or why it could not be judged (the
    agent was too busy to ask the registry: ask again), or None."""
    ready = readiness(answer)
    reasons = []
    if ready.registry == "missing":
        reasons.append(f"the registry does not have it ({ready.said})")
    if ready.may == "token":
        reasons.append(
            f"the agent would refuse the deploy job's GitHub OIDC token: {ready.token_reason} "
            f"(change: {what_to_change(ready.token_reason)})"
        )
    elif ready.may == "identity":
        reasons.append(f"this caller may not deploy to {answer.get('environment')} (DEPLOY_AGENT_DEPLOYERS_<ENV>)")
    image = answer.get("image")
    busy = ready.registry == "busy"
    if reasons:
        unasked = "; the registry was not asked (the agent was busy)" if busy else ""
        return f"a deploy of {image} would not go through: " + "; ".join(reasons) + f"{unasked}; nothing was touched"
    if busy:
        # Not a "no": the tag may well be there, and the same dry run a moment later finds out.
        return (
            f"the agent is busy asking the registry for other dry runs, so it did not ask whether it has {image}; "
            "ask again in a few seconds; nothing was touched"
        )
    return None


def change_lines(current: dict[str, Any], *, image: str) -> list[str]:
    """A small diff: what runs now (-) and what would run (+)."""
    state = current.get("state")
    if state in ("absent", None):
        return [f"- (no container {current.get('container')})", f"+ {current.get('container')} running {image}"]
    now = f"{current.get('container')} {state} {current.get('image')}"
    if current.get("digest"):
        now += f" ({current['digest']})"
    if current.get("started_at"):
        now += f" since {current['started_at']}"
    marker = "  (same image: it would be replaced by a new container)" if current.get("image") == image else ""
    return [f"- {now}", f"+ {current.get('container')} running {image}{marker}"]


def history_table(deployments: list[DeploymentDict]) -> list[str]:
    """The newest deployments, one row each: who (the origin's actor, else the authenticated one), when, how long,
    and for a failure the step and the reason."""
    rows: list[tuple[str, ...]] = [("ID", "ENV", "TAG", "STATE", "WHO", "STARTED", "DURATION", "FAILURE")]
    for d in deployments:
        error = d.get("error")
        failure = f"{error.get('step')}: {error.get('message')}" if error else ""
        who = who_deployed(d)
        started = (d.get("created_at") or "-").replace("T", " ")[:19]
        took = duration({"started_at": d.get("created_at"), "finished_at": d.get("finished_at")})
        cells = (d.get("id"), d.get("environment"), d.get("tag"), d.get("state"), who, started, took, failure)
        rows.append(tuple(printable(str(c)) if c else "-" for c in cells))
    if len(rows) == 1:
        return ["no deployments yet"]
    return _columns(rows)


_RUN = re.compile(r"/actions/runs/([0-9]+)(?:/attempts/([0-9]+))?$")


def who_deployed(d: Mapping[str, Any]) -> str:
    """The origin's actor, marked as GitHub-verified (with its run and attempt) or only claimed; else the
    authenticated actor."""
    origin = d.get("origin") or {}
    actor = origin.get("actor")
    if not actor:
        return str(d.get("actor") or "-")
    if origin.get("verified") is not True:
        return f"{actor} (claimed)"
    run = _RUN.search(str(origin.get("run_url") or ""))
    return f"{actor} (verified, run {run[1]}/{run[2] or 1})" if run else f"{actor} (verified)"
