"""The `deployplan` command line: parse options, build what the command needs, run it; the only place that exits."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from runner import __version__, commands
from runner.commands import EXIT_AGENT, EXIT_FAILED, EXIT_INVALID
from runner.console import Console
from runner.envschema import DEFAULT_PATH as ENV_SCHEMA_PATH
from runner.errors import AgentRefused, AgentUnreachable, DeployFailed, DeployplanError, InvalidInput, UsageError


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


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "lint": commands.cmd_lint,
    "render": commands.cmd_render,
    "dry-run": commands.cmd_dry_run,
    "apply": commands.cmd_apply,
    "status": commands.cmd_status,
    "audit": commands.cmd_audit,
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
