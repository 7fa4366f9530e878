"""`deployplan dry-run` and `deployplan apply`: the variables of ENV_SCHEMA.md, the agent's answer, the outcome."""

from __future__ import annotations

import argparse

from runner.cli import github
from runner.cli.client import agent_url, connect
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, AgentUnreachable, Exit, UsageError
from runner.cli.follow import deadline_seconds, request_body, send
from runner.cli.github import mask_lines
from runner.cli.local import load
from runner.cli.refusal import not_run
from runner.cli.report import dry_run_report
from runner.cli.watch import Target, watch
from runner.core.envschema import EnvSchema, load_env_schema
from runner.core.errors import InvalidInput
from runner.core.facts import Facts
from runner.core.plan import Plan
from runner.core.problems import Problem
from runner.core.secrets import Masker, Secret, reveal
from runner.core.steps import describe


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


def _require(schema: EnvSchema, missing: list[str]) -> None:
    if missing:
        message = (
            f"required variables not set in the environment: {', '.join(missing)} (listed in {schema.path}); "
            "nothing was sent"
        )
        raise InvalidInput([Problem("environment", 0, 0, "", message)])


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
            console.print(f"  {var.name}={values.get(var.name, unset)}")
        _require(schema, missing)
    else:
        _require(schema, missing)
        body = request_body(plan, values, dry_run=True, origin=github.origin(console.environ))
        if args.confirm is not None:
            body["confirm"] = args.confirm  # sent as apply sends it: the agent judges it the same way
        elif plan.environment == "prod":
            # The agent refuses prod without it, dry runs included; a dry run is the question "would it deploy?".
            body["confirm"] = f"prod:{plan.tag}"
        for line in dry_run_report(connect(url, console.environ).post("/v1/deploy", body), values=values):
            console.print(line)
    console.print("nothing was touched (dry run)")
    return Exit.OK


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
    _require(schema, missing)
    _check_confirm(plan, args.confirm)
    console.print(f"deploying {plan.image} to {plan.environment} through {client.url}")
    deployment_id, first = send(client, plan, env=values, confirm=args.confirm, origin=github.origin(console.environ))
    console.print(f"deployment {deployment_id} accepted")
    target = Target(environment=plan.environment, tag=plan.tag, image=plan.image)
    return watch(
        console, client, deployment_id, target=target, masker=masker, seconds=deadline_seconds(plan), after=first
    )
