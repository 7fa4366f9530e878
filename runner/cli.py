"""The `deployplan` command line: parse options, build what the command needs, run it; the only place that exits."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

import yaml

from runner import __version__
from runner.envschema import DEFAULT_PATH as ENV_SCHEMA_PATH
from runner.envschema import load_env_schema
from runner.errors import AgentRefused, AgentUnreachable, DeployFailed, DeployplanError, InvalidInput, UsageError
from runner.lint import lint
from runner.plan import Plan, describe_steps, load_plan, read_plan_file
from runner.problems import Problem
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


def cmd_dry_run(args: argparse.Namespace, console: Console) -> int:
    plan = _load(args, console)
    schema = load_env_schema(args.env_schema)
    values, missing = schema.read(console.environ)
    console.print(f"plan {plan.data['plan']} ({plan.source}) for {plan.environment}: {plan.image}")
    console.print("would ask the agent to run, in this order:")
    for number, (action, description) in enumerate(describe_steps(plan), start=1):
        console.print(f"  {number}. {action:<12} {description}")
    console.print(f"with the runtime variables of {schema.path}:")
    for var in schema.variables:
        shown = str(values[var.name]) if var.name in values else ("MISSING" if var.required else "(not set, optional)")
        console.print(f"  {var.name}={shown}")
    if missing:
        raise InvalidInput(
            [Problem(schema.path, 0, 0, "", f"required variables not set in the environment: {', '.join(missing)}")]
        )
    console.print("nothing was touched (dry run)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "lint": cmd_lint,
    "render": cmd_render,
    "dry-run": cmd_dry_run,
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
        console.error(f"internal error: {type(e).__name__}: {e}" + ("" if verbose else " (run with --verbose for details)"))
        if verbose:
            traceback.print_exc(file=console.err)
        return EXIT_FAILED


def main() -> NoReturn:
    """Console script entry point."""
    console = Console(out=sys.stdout, err=sys.stderr, github=os.environ.get("GITHUB_ACTIONS") == "true", environ=os.environ)
    sys.exit(run(sys.argv[1:], console))
