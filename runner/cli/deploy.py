"""`deployplan dry-run` and `deployplan apply`: the variables of ENV_SCHEMA.md, the agent's answer, the outcome."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from runner.cli import github, oidc
from runner.cli.client import AgentClient, agent_url, connect
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, AgentUnreachable, Exit, UsageError
from runner.cli.follow import Target, deadline_seconds, request_body, send
from runner.cli.github import append_summary, mask_lines, rules_summary
from runner.cli.local import load
from runner.cli.refusal import not_run
from runner.cli.report import dry_run_report, refusal
from runner.cli.watch import watch
from runner.core.envschema import EnvSchema, load_env_schema
from runner.core.errors import InvalidInput
from runner.core.facts import Facts
from runner.core.plan import Plan
from runner.core.problems import Problem
from runner.core.secrets import Masker, Secret, reveal
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
    problems += schema.check(console.environ, environment=environment)
    if problems:
        raise InvalidInput(problems)


def cmd_dry_run(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = load(args, console)
    if args.confirm is not None:
        _check_confirm(plan, args.confirm)
    url = None if args.local else agent_url(args.agent, console.environ)
    if url and not args.agent:
        console.error(f"asking the agent at {url} (from DEPLOY_AGENT_URL); --local for a local dry run only")
    if not url:
        console.print(f"plan {plan.name} ({plan.source}) for {plan.environment}: {plan.image}")
        console.print("would ask the agent to run, in this order:")
        facts = Facts(env_names=tuple(sorted(values)))
        for number, (action, description) in enumerate(describe(plan, facts), start=1):
            console.print(f"  {number}. {action:<12} {description}")
        console.print(f"with the runtime variables of {schema.path}:")
        for var in schema.variables:
            unset = "MISSING" if var.required else "(not set, optional)"
            console.print(f"  {var.name}={printable(str(values.get(var.name, unset)))}")
        _require_in_dry_run(schema, missing, console, environment=plan.environment)
    else:
        _require_in_dry_run(schema, missing, console, environment=plan.environment)
        client = connect(url, console.environ)
        token = _dry_run_token(console)
        answer = ask_dry_run(client, plan, values, console.environ, confirm=args.confirm, token=token)
        for line in dry_run_report(answer, values=values):
            console.print(line)
        refused = refusal(answer)
        if refused is not None:
            raise AgentRefused(refused)
    console.print("nothing was touched (dry run)")
    return Exit.OK


def ask_dry_run(
    client: AgentClient,
    plan: Plan,
    values: dict[str, str | Secret],
    environ: Mapping[str, str],
    *,
    confirm: str | None,
    token: Secret | None,
) -> dict[str, Any]:
    """The agent's dry run of the plan (for `dry-run --agent` and `check`): the deploy's request with dry_run true,
    and the deploy job's GitHub OIDC token when there is one, which the agent then judges as the deploy's (a dry
    run never uses it up). `confirm` is sent as apply sends it; without one, prod carries `prod:<tag>`: the agent
    refuses prod without it, dry runs included, and a dry run is the question "would it deploy?"."""
    body = request_body(plan, values, dry_run=True, origin=github.origin(environ))
    if confirm is not None:
        body["confirm"] = confirm
    elif plan.environment == "prod":
        body["confirm"] = f"prod:{plan.tag}"
    return client.post("/v1/deploy", body, headers=oidc.header(token))


def _dry_run_token(console: Console) -> Secret | None:
    """With DEPLOY_OIDC_AUDIENCE in GitHub Actions: the job's token, asked for and masked as apply does (exit 2
    without `id-token: write`, 3 when GitHub gives none). Elsewhere no token can be had: the dry run then speaks
    for this identity only, and says so."""
    if oidc.wanted(console.environ) is None:
        return None
    if not console.github:
        console.error(
            f"{oidc.AUDIENCE} is set, but only a GitHub Actions job can ask for its OIDC token: the agent judges this "
            "identity only, not the deploy job's token"
        )
        return None
    return _job_token(console, oidc.audience(console.environ))


def _require_in_dry_run(schema: EnvSchema, missing: list[str], console: Console, *, environment: str) -> None:
    """_require, and in GitHub Actions a job summary row for each finding (apply's is written by not_run)."""
    try:
        _require(schema, missing, console, environment=environment)
    except InvalidInput as e:
        if console.github:
            append_summary(
                console.environ.get("GITHUB_STEP_SUMMARY"), rules_summary(e.problems, environment=environment)
            )
        raise


def _check_confirm(plan: Plan, confirm: str | None) -> None:
    """prod needs --confirm prod:<tag> (apply; dry-run when it is given): refused here, before anything is sent."""
    if plan.environment == "prod" and confirm != f"prod:{plan.tag}":
        raise UsageError(
            f"a prod deploy needs --confirm prod:{plan.tag} (given: {confirm or 'nothing'}); nothing was sent"
        )


def cmd_apply(args: argparse.Namespace, console: Console) -> int:
    masker = Masker(())
    try:
        schema, values, missing = _variables(args, console)
        masker = Masker(v for v in values.values() if isinstance(v, Secret))
        return _apply(args, console, schema=schema, values=values, missing=missing, masker=masker)
    except (UsageError, InvalidInput, AgentRefused, AgentUnreachable) as e:
        if console.github:  # a deploy that never ran leaves its trace in the job too, not only in its log
            not_run(console, args, e, masker)
        raise


def _apply(
    args: argparse.Namespace,
    console: Console,
    *,
    schema: EnvSchema,
    values: dict[str, str | Secret],
    missing: list[str],
    masker: Masker,
) -> int:
    plan = load(args, console)
    client = connect(args.agent, console.environ)
    _require(schema, missing, console, environment=plan.environment)
    _check_confirm(plan, args.confirm)
    audience = oidc.audience(console.environ)  # exit 2 here, before anything is sent, without id-token: write
    headers = oidc.header(_job_token(console, audience))
    console.print(f"deploying {plan.image} to {plan.environment} through {client.url}")
    origin = github.origin(console.environ)
    deployment_id, first = send(client, plan, env=values, confirm=args.confirm, origin=origin, headers=headers)
    console.print(f"deployment {deployment_id} accepted")
    target = Target(environment=plan.environment, tag=plan.tag, image=plan.image)
    return watch(
        console, client, deployment_id, target=target, masker=masker, seconds=deadline_seconds(plan), after=first
    )


def _job_token(console: Console, audience: str | None) -> Secret | None:
    """With DEPLOY_OIDC_AUDIENCE: the job's GitHub OIDC token for the request, masked in the job log first."""
    if audience is None:
        return None
    token = oidc.request_token(console.environ, audience)
    if console.github:
        for line in mask_lines([token.reveal()]):
            console.print(line)
    console.print(f"with the deploy job's GitHub OIDC token for {audience}")
    return token
