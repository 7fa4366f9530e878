"""`deployplan lint` and `deployplan render`: the plan files on this machine, no agent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from runner.cli.console import Console
from runner.cli.errors import Exit
from runner.cli.lint import lint, plan_files
from runner.cli.workflowcheck import DEFAULT_PATH as WORKFLOW_PATH
from runner.core.plan import Plan, load_plan, read_plan_file


def cmd_lint(args: argparse.Namespace, console: Console) -> int:
    problems = lint(
        args.paths or [Path("plans")],
        env_schema=args.env_schema,
        workflow=WORKFLOW_PATH,
        repository=args.repository or console.environ.get("GITHUB_REPOSITORY"),
    )
    console.problems(problems)
    if problems:
        return Exit.FAILED
    plans = len(plan_files(args.paths or [Path("plans")]))
    checked = [f"{plans} plan{'' if plans == 1 else 's'}", str(args.env_schema)]
    if WORKFLOW_PATH.exists():
        checked.append(str(WORKFLOW_PATH))
    listed = ", ".join(checked[:-1]) + f" and {checked[-1]}"
    console.print(f"{listed}: {console.style('no problems', 'green', 'bold')}")
    return Exit.OK


def load(args: argparse.Namespace, console: Console) -> Plan:
    """The plan named on the command line, rendered with --env, --tag and the repository (when it needs one)."""
    repository = args.repository or console.environ.get("GITHUB_REPOSITORY") or None
    return load_plan(
        read_plan_file(args.plan), source=str(args.plan), env=args.env, tag=args.tag, repository=repository
    )


def cmd_render(args: argparse.Namespace, console: Console) -> int:
    plan = load(args, console)
    if args.format == "json":
        console.print(json.dumps(plan.data, indent=2))
    else:
        console.print(yaml.safe_dump(plan.data, sort_keys=False, default_flow_style=False).rstrip())
    return Exit.OK
