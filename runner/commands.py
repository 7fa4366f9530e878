"""The commands of the CLI: each builds what it needs from the parsed options, runs, and returns its exit code.

They raise the errors of `runner.errors`; `runner.cli` maps those to exit codes and is the only place that exits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from agent.audit import AuditError, ChainBroken, verify_file
from runner.apply import Printer, deadline_seconds, follow, request_body, send, verify_status
from runner.client import AgentClient, Credentials
from runner.console import Console
from runner.envschema import EnvSchema, load_env_schema
from runner.errors import AgentRefused, AgentUnreachable, DeployFailed, InvalidInput, UsageError
from runner.github import append_summary, command, mask_lines, summary_markdown
from runner.lint import lint
from runner.plan import Plan, describe_steps, load_plan, read_plan_file
from runner.problems import Problem
from runner.report import dry_run_report, status_table
from runner.secrets import Secret, redact, reveal
from runner.workflowcheck import DEFAULT_PATH as WORKFLOW_PATH

# The exit codes of SPEC.md: commands return the first two; runner.cli maps errors to all four.
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_AGENT = 0, 1, 2, 3


def cmd_lint(args: argparse.Namespace, console: Console) -> int:
    problems = lint(
        args.paths or [Path("plans")],
        env_schema=args.env_schema,
        workflow=WORKFLOW_PATH,
        repository=args.repository or console.environ.get("GITHUB_REPOSITORY"),
    )
    console.problems(problems)
    return EXIT_FAILED if problems else EXIT_OK


def _load(args: argparse.Namespace, console: Console) -> Plan:
    repository = args.repository or console.environ.get("GITHUB_REPOSITORY")
    if not repository:
        raise UsageError("--repository is required (or set GITHUB_REPOSITORY), e.g. --repository acme/trader")
    raw = read_plan_file(args.plan)
    return load_plan(raw, source=str(args.plan), env=args.env, tag=args.tag, repository=repository)


def cmd_render(args: argparse.Namespace, console: Console) -> int:
    plan = _load(args, console)
    if args.format == "json":
        console.print(json.dumps(plan.data, indent=2))
    else:
        console.print(yaml.safe_dump(plan.data, sort_keys=False, default_flow_style=False).rstrip())
    return EXIT_OK


def _agent_url(args: argparse.Namespace, console: Console) -> str | None:
    url: str | None = args.agent or console.environ.get("DEPLOY_AGENT_URL")
    return url


def _agent(args: argparse.Namespace, console: Console) -> AgentClient:
    url = _agent_url(args, console)
    if not url:
        raise UsageError("--agent is required (or set DEPLOY_AGENT_URL), e.g. --agent https://deploy.example.com")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--agent {url!r} must be an http:// or https:// URL")
    return AgentClient(url, Credentials.from_environ(console.environ))


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
        message = f"required variables not set in the environment: {', '.join(missing)}; nothing was sent"
        raise InvalidInput([Problem(schema.path, 0, 0, "", message)])


def cmd_dry_run(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = _load(args, console)
    if not _agent_url(args, console):
        console.print(f"plan {plan.data['plan']} ({plan.source}) for {plan.environment}: {plan.image}")
        console.print("would ask the agent to run, in this order:")
        for number, (action, description) in enumerate(describe_steps(plan), start=1):
            console.print(f"  {number}. {action:<12} {description}")
        console.print(f"with the runtime variables of {schema.path}:")
        for var in schema.variables:
            unset = "MISSING" if var.required else "(not set, optional)"
            console.print(f"  {var.name}={values.get(var.name, unset)}")
        _require(schema, missing)
    else:
        _require(schema, missing)
        body = request_body(plan, values, dry_run=True)
        if plan.environment == "prod":
            # The agent refuses prod without it, dry runs included; a dry run is the question "would it deploy?".
            body["confirm"] = f"prod:{plan.tag}"
        for line in dry_run_report(_agent(args, console).post("/v1/deploy", body), values=values):
            console.print(line)
    console.print("nothing was touched (dry run)")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = _load(args, console)
    client = _agent(args, console)
    _require(schema, missing)
    if plan.environment == "prod" and args.confirm != f"prod:{plan.tag}":
        raise UsageError(
            f"a prod deploy needs --confirm prod:{plan.tag} (given: {args.confirm or 'nothing'}); nothing was sent"
        )
    secrets = [v.reveal() for v in values.values() if isinstance(v, Secret)]
    printer = Printer(out=console.out, github=console.github, secrets=secrets, live=console.out.isatty())
    console.print(f"deploying {plan.image} to {plan.environment} through {client.url}")
    deployment_id = send(client, plan, env=values, confirm=args.confirm)
    console.print(f"deployment {deployment_id} accepted")
    try:
        deployment = follow(
            client,
            deployment_id,
            printer=printer,
            deadline=time.monotonic() + deadline_seconds(plan),
            on_lost=lambda reason: console.error(f"lost contact with the agent ({reason}); still following"),
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
    return _outcome(
        console, plan, deployment, problem=problem, logs=[redact(line, secrets) for line in deployment.get("logs", [])]
    )


def _outcome(console: Console, plan: Plan, deployment: dict[str, Any], *, problem: str | None, logs: list[str]) -> int:
    """Report how the deploy ended (and write the job summary); a failure raises DeployFailed."""
    succeeded = deployment.get("state") == "succeeded"
    if console.github:
        verified = "yes" if succeeded and problem is None else "no"
        summary = summary_markdown(deployment, verified=verified, logs=logs)
        append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), summary)
    if not succeeded:
        error = deployment.get("error") or {}
        if logs:
            console.print(f"the container's last {len(logs)} log lines:")
            for line in logs:
                console.print(f"  | {line}")
        state, step = deployment.get("state"), error.get("step")
        problem = f"{plan.environment} {plan.tag}: {state} in step {step}: {error.get('message')}"
    elif problem is not None:
        problem = f"the deploy finished but {problem}"
    if problem is not None:
        if console.github:
            console.print(command("error", problem))
        raise DeployFailed(problem)
    console.print(f"deployed and verified: {plan.environment} runs {plan.image} ({deployment.get('digest')})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    status = _agent(args, console).get("/v1/status" + (f"?{urlencode({'env': args.env})}" if args.env else ""))
    if args.json:
        console.print(json.dumps(status, indent=2))
    else:
        for line in status_table(status):
            console.print(line)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    if not args.path.is_file():
        raise UsageError(f"{args.path}: no such audit log")
    try:
        count = verify_file(args.path)
    except ChainBroken as e:
        console.error(
            f"{args.path}: BROKEN at line {e.line}" + (f" (seq {e.seq})" if e.seq is not None else "") + f": {e.reason}"
        )
        return EXIT_FAILED
    except AuditError as e:
        console.error(f"{args.path}: {e}")
        return EXIT_FAILED
    console.print(f"{args.path}: intact, {count} records")
    return EXIT_OK
