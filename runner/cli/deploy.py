"""`deployplan dry-run` and `deployplan apply`: the variables of ENV_SCHEMA.md, the agent's answer, the outcome."""

from __future__ import annotations

import argparse
import time
from typing import Any

from runner.cli import github, oidc
from runner.cli.client import agent_url, connect
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, AgentUnreachable, DeployFailed, Exit, UsageError
from runner.cli.follow import Printer, deadline_seconds, follow, request_body, send, verify_status
from runner.cli.github import append_summary, command, mask_lines, rules_summary, summary_markdown
from runner.cli.local import load
from runner.cli.report import dry_run_report, refusal
from runner.core.envschema import EnvSchema, load_env_schema
from runner.core.errors import InvalidInput
from runner.core.facts import Facts
from runner.core.plan import Plan
from runner.core.problems import Problem
from runner.core.secrets import Masker, Secret, reveal
from runner.core.shapes import DeploymentDict
from runner.core.steps import describe
from runner.core.text import printable


def _variables(args: argparse.Namespace, console: Console) -> tuple[EnvSchema, dict[str, str | Secret], list[str]]:
    """The listed variables from this process's environment and the required ones missing.

    In GitHub Actions every secret value is masked first, before anything else can print it.
    """
    schema = load_env_schema(args.env_schema)
    values, missing = schema.read(console.environ)
    if console.github:
        for line in mask_lines(reveal(v) for v in values.values() if isinstance(v, Secret)):
            console.print(line)
    return schema, values, missing


def _require(schema: EnvSchema, missing: list[str], console: Console, *, environment: str) -> None:
    """Every required variable set and every value within its rule, before anything is sent (exit 2)."""
    problems = []
    if missing:
        message = (
            f"required variables not set in the environment: {', '.join(missing)} (listed in {schema.path}); "
            "nothing was sent"
        )
        problems.append(Problem("environment", 0, 0, "", message))
    broken = schema.check(console.environ, environment=environment)
    if console.github and broken:
        append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), rules_summary(broken, environment=environment))
    if problems or broken:
        raise InvalidInput(problems + broken)


def cmd_dry_run(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = load(args, console)
    if not agent_url(args.agent, console.environ):
        console.print(f"plan {plan.name} ({plan.source}) for {plan.environment}: {plan.image}")
        console.print("would ask the agent to run, in this order:")
        facts = Facts(env_names=tuple(sorted(values)))
        for number, (action, description) in enumerate(describe(plan, facts), start=1):
            console.print(f"  {number}. {action:<12} {description}")
        console.print(f"with the runtime variables of {schema.path}:")
        for var in schema.variables:
            unset = "MISSING" if var.required else "(not set, optional)"
            console.print(f"  {var.name}={values.get(var.name, unset)}")
        _require(schema, missing, console, environment=plan.environment)
    else:
        _require(schema, missing, console, environment=plan.environment)
        body = request_body(plan, values, dry_run=True, origin=github.origin(console.environ))
        if plan.environment == "prod":
            # The agent refuses prod without it, dry runs included; a dry run is the question "would it deploy?".
            body["confirm"] = f"prod:{plan.tag}"
        answer = connect(args.agent, console.environ).post("/v1/deploy", body)
        for line in dry_run_report(answer, values=values):
            console.print(line)
        refused = refusal(answer)
        if refused is not None:
            raise AgentRefused(refused)
    console.print("nothing was touched (dry run)")
    return Exit.OK


def cmd_apply(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = load(args, console)
    client = connect(args.agent, console.environ)
    _require(schema, missing, console, environment=plan.environment)
    if plan.environment == "prod" and args.confirm != f"prod:{plan.tag}":
        raise UsageError(
            f"a prod deploy needs --confirm prod:{plan.tag} (given: {args.confirm or 'nothing'}); nothing was sent"
        )
    audience = oidc.audience(console.environ)  # exit 2 here, before anything is sent, without id-token: write
    masker = Masker(v for v in values.values() if isinstance(v, Secret))
    printer = Printer(out=console.out, github=console.github, masker=masker, live=console.out.isatty())
    headers = _oidc_headers(console, audience)
    console.print(f"deploying {plan.image} to {plan.environment} through {client.url}")
    origin = github.origin(console.environ)
    deployment_id, first = send(client, plan, env=values, confirm=args.confirm, origin=origin, headers=headers)
    console.print(f"deployment {deployment_id} accepted")
    try:
        deployment = follow(
            client,
            deployment_id,
            printer=printer,
            deadline=time.monotonic() + deadline_seconds(plan),
            on_lost=lambda reason: console.error(f"lost contact with the agent ({reason}); still following"),
            after=first,
        )
    except KeyboardInterrupt:
        console.error(
            f"stopped following; deployment {deployment_id} goes on at the agent. Follow it with\n"
            f"  deployplan status --agent {client.url} --env {plan.environment}"
        )
        raise
    problem = None
    if deployment.get("state") == "succeeded":
        try:
            problem = verify_status(client, plan, deployment)
        except (AgentUnreachable, AgentRefused) as e:
            # The deploy ran: exit 3 would say nothing happened. It is a deploy that could not be verified.
            problem = f"/v1/status could not be read to verify it: {e}"
    logs = [printable(masker.mask(line)) for line in deployment.get("logs", [])]
    return _outcome(console, plan, deployment, problem=problem, logs=logs, masker=masker)


def _oidc_headers(console: Console, audience: str | None) -> dict[str, Secret] | None:
    """With DEPLOY_OIDC_AUDIENCE: the job's GitHub OIDC token for the deploy request, masked in the job log first."""
    if audience is None:
        return None
    token = oidc.request_token(console.environ, audience)
    if console.github:
        for line in mask_lines([token.reveal()]):
            console.print(line)
    console.print(f"with the deploy job's GitHub OIDC token for {audience}")
    return {oidc.HEADER: token}


def _outcome(
    console: Console, plan: Plan, deployment: DeploymentDict, *, problem: str | None, logs: list[str], masker: Masker
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
        problem = f"{plan.environment} {plan.tag}: {state} in step {step}: {error.get('message')}"
    elif problem is not None:
        problem = f"the deploy finished but {problem}"
    if problem is not None:
        problem = printable(masker.mask(problem))
        if console.github:
            console.print(command("error", problem))
        raise DeployFailed(problem)
    console.print(f"deployed and verified: {plan.environment} runs {plan.image} ({deployment.get('digest')})")
    return Exit.OK
