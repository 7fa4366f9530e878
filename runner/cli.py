"""The `deployplan` command line: parse options, build what the command needs, run it; the only place that exits."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml

from agent.audit import AuditError, ChainBroken, verify_file
from runner import __version__
from runner.apply import Printer, deadline_seconds, follow, request_body, send, verify_status
from runner.client import AgentClient, Credentials
from runner.envschema import DEFAULT_PATH as ENV_SCHEMA_PATH
from runner.envschema import EnvSchema, load_env_schema
from runner.errors import AgentRefused, AgentUnreachable, DeployFailed, DeployplanError, InvalidInput, UsageError
from runner.github import append_summary, command, mask_lines, summary_markdown
from runner.lint import lint
from runner.plan import Plan, describe_steps, load_plan, read_plan_file
from runner.problems import Problem
from runner.report import dry_run_report, status_table
from runner.secrets import Secret, redact, reveal
from runner.workflowcheck import DEFAULT_PATH as WORKFLOW_PATH

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_AGENT = 0, 1, 2, 3


@dataclass
class Console:
    """Where a command writes, and whether GitHub Actions is reading it."""

    out: TextIO
    err: TextIO
    github: bool
    environ: Mapping[str, str] = field(default_factory=dict)

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def problems(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.error(problem.format())
        if self.github:
            for problem in problems:
                self.print(problem.github_annotation())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deployplan", description="Manual, explicit, auditable deploys of one runtime image.")
    parser.add_argument("--version", action="version", version=f"deployplan {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show a traceback on unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("lint", help="lint plan files, the variable table and the deploy workflow")
    p.add_argument("paths", nargs="*", type=Path, help="plan files or folders (default: plans/)")
    p.add_argument("--repository", help="owner/repo to render with (default: GITHUB_REPOSITORY, else a sample)")
    p.add_argument("--env-schema", type=Path, default=ENV_SCHEMA_PATH, help="the variable table (default: %(default)s)")

    p = commands.add_parser("render", help="print the rendered, validated plan")
    _plan_arguments(p)
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")

    p = commands.add_parser("dry-run", help="show exactly what a deploy would do; touches nothing")
    _plan_arguments(p)
    p.add_argument("--env-schema", type=Path, default=ENV_SCHEMA_PATH, help="the variable table (default: %(default)s)")
    p.add_argument("--agent", help="ask this agent what it would do (default: DEPLOY_AGENT_URL, else local only)")

    p = commands.add_parser("apply", help="deploy: send the plan, follow the four steps, verify the result")
    _plan_arguments(p)
    p.add_argument("--env-schema", type=Path, default=ENV_SCHEMA_PATH, help="the variable table (default: %(default)s)")
    p.add_argument("--agent", help="the agent's URL (default: DEPLOY_AGENT_URL)")
    p.add_argument("--confirm", help="required for prod: exactly prod:<tag>")

    p = commands.add_parser("status", help="show what runs where")
    p.add_argument("--agent", help="the agent's URL (default: DEPLOY_AGENT_URL)")
    p.add_argument("--env", help="only this environment")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")

    p = commands.add_parser("audit", help="the audit log")
    audit = p.add_subparsers(dest="audit_command", metavar="verify", required=True, parser_class=_Parser)
    v = audit.add_parser("verify", help="check the audit log's hash chain; name the first broken record")
    v.add_argument("path", type=Path, help="the audit log, e.g. /var/lib/deploy-agent/audit.jsonl")
    return parser


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", type=Path, help="the plan file, e.g. plans/runtime.yaml")
    p.add_argument("--env", required=True, help="dev or prod")
    p.add_argument("--tag", required=True, help="the image tag: a full commit SHA or a semantic version")
    p.add_argument("--repository", help="owner/repo (default: GITHUB_REPOSITORY)")


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


def _agent(args: argparse.Namespace, console: Console, *, required: bool) -> AgentClient | None:
    url = args.agent or console.environ.get("DEPLOY_AGENT_URL")
    if not url:
        if required:
            raise UsageError("--agent is required (or set DEPLOY_AGENT_URL), e.g. --agent https://deploy.example.com")
        return None
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
    client = _agent(args, console, required=False)
    if client is None:
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
        for line in dry_run_report(client.post("/v1/deploy", body), values=values):
            console.print(line)
    console.print("nothing was touched (dry run)")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace, console: Console) -> int:
    schema, values, missing = _variables(args, console)
    plan = _load(args, console)
    client = _agent(args, console, required=True)
    assert client is not None
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
    client = _agent(args, console, required=True)
    assert client is not None
    status = client.get("/v1/status" + (f"?env={args.env}" if args.env else ""))
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


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "lint": cmd_lint,
    "render": cmd_render,
    "dry-run": cmd_dry_run,
    "apply": cmd_apply,
    "status": cmd_status,
    "audit": cmd_audit,
}


def run(argv: Sequence[str], console: Console) -> int:
    """Run one command and map every error to its exit code; never raises."""
    verbose = "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, console)
    except UsageError as e:
        console.error(f"error: {e}")
        return EXIT_INVALID
    except InvalidInput as e:
        console.problems(e.problems)
        return EXIT_INVALID
    except (AgentUnreachable, AgentRefused) as e:
        console.error(f"error: {e}")
        return EXIT_AGENT
    except DeployFailed as e:
        console.error(f"deploy failed: {e}")
        return EXIT_FAILED
    except DeployplanError as e:  # pragma: no cover - every subclass is mapped above
        console.error(f"error: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    except Exception as e:  # the last line of defence: a plain message, a traceback only with --verbose
        # Not str(e): an unexpected error may quote a value (a header, a variable) that is a secret.
        console.error(f"internal error: {type(e).__name__}" + ("" if verbose else " (run with --verbose for details)"))
        if verbose:
            traceback.print_exc(file=console.err)
        return EXIT_FAILED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> NoReturn:
    """Console script entry point."""
    # A cancelled GitHub job gets SIGINT, then SIGTERM: both stop following the same way (the deploy goes on).
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(
        out=sys.stdout, err=sys.stderr, github=os.environ.get("GITHUB_ACTIONS") == "true", environ=os.environ
    )
    sys.exit(run(sys.argv[1:], console))
