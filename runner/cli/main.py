"""The `deployplan` command line: parse options, build what the command needs, run it; the only place that exits.

It imports only argparse and the small error modules at start: each command's module (and the libraries it
needs: jsonschema, Jinja2, the HTTP client) is imported when that command runs, so `--version` and `--help`
start as fast as Python does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from runner import __version__
from runner.cli.errors import AgentRefused, AgentUnreachable, DeployFailed, Exit, UsageError
from runner.core.errors import DeployplanError, InvalidInput

if TYPE_CHECKING:  # the console module is imported by main(), not at start
    from runner.cli.console import Console

ENV_SCHEMA_PATH = Path("infra/ENV_SCHEMA.md")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# Each command: the module and function that run it, imported only when it runs.
COMMANDS: dict[str, str] = {
    "lint": "runner.cli.local:cmd_lint",
    "render": "runner.cli.local:cmd_render",
    "dry-run": "runner.cli.deploy:cmd_dry_run",
    "apply": "runner.cli.deploy:cmd_apply",
    "status": "runner.cli.reads:cmd_status",
    "history": "runner.cli.reads:cmd_history",
    "logs": "runner.cli.reads:cmd_logs",
    "prune": "runner.cli.prune:cmd_prune",
    "audit": "runner.cli.audit:cmd_audit",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deployplan", description="Manual, explicit, auditable deploys of one runtime image.")
    parser.add_argument("--version", action="version", version=f"deployplan {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show a traceback on unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("lint", help="lint plan files, the variable table and the deploy workflow")
    p.add_argument("paths", nargs="*", type=Path, help="plan files or folders (default: plans/)")
    p.add_argument("--repository", help="owner/repo to render with (default: GITHUB_REPOSITORY, else a sample)")
    _env_schema(p)

    p = commands.add_parser("render", help="print the rendered, validated plan")
    _plan_arguments(p)
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")

    p = commands.add_parser("dry-run", help="show exactly what a deploy would do; touches nothing")
    _plan_arguments(p)
    _env_schema(p)
    p.add_argument("--agent", help="ask this agent what it would do (default: DEPLOY_AGENT_URL, else local only)")

    p = commands.add_parser("apply", help="deploy: send the plan, follow the four steps, verify the result")
    _plan_arguments(p)
    _env_schema(p)
    _agent(p)
    p.add_argument("--confirm", help="required for prod: exactly prod:<tag>")

    p = commands.add_parser("status", help="show what runs where")
    _agent(p)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")

    p = commands.add_parser("history", help="the newest deployments: who deployed what, when, and how it ended")
    _agent(p)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--limit", type=_limit, default=20, help="how many, 1-200 (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")

    p = commands.add_parser("logs", help="the runtime's recent output (secret values masked)")
    _agent(p)
    p.add_argument("--env", required=True, help="the environment, e.g. dev")
    p.add_argument("--tail", type=_tail, default=200, help="how many lines, 1-5000 (default: %(default)s)")
    p.add_argument("--since", help="only lines from this long ago (10m, 2h, 90s) or since an RFC 3339 time")

    p = commands.add_parser("prune", help="remove old runtime images from the server (lists only, unless --yes)")
    _agent(p)
    p.add_argument("--keep", type=_keep, required=True, help="keep the newest K successful digests per environment")
    p.add_argument("--yes", action="store_true", help="remove them; without it, only show what would go")

    p = commands.add_parser("audit", help="the audit log")
    audit = p.add_subparsers(dest="audit_command", metavar="verify", required=True, parser_class=_Parser)
    v = audit.add_parser("verify", help="check the audit log's hash chain; name the first broken record")
    v.add_argument("path", type=Path, help="the audit log, e.g. /var/lib/deploy-agent/audit.jsonl")
    v.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="an audit head kept off the server (apply prints one per deploy); repeatable",
    )
    return parser


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", type=Path, help="the plan file, e.g. plans/runtime.yaml")
    p.add_argument("--env", required=True, help="dev or prod")
    p.add_argument("--tag", required=True, help="the image tag: a full commit SHA or a semantic version")
    p.add_argument("--repository", help="owner/repo, when the plan uses {{ repository }} (default: GITHUB_REPOSITORY)")


def _env_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-schema", type=Path, default=ENV_SCHEMA_PATH, help="the variable table (default: %(default)s)")


def _agent(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", help="the agent's URL (default: DEPLOY_AGENT_URL)")


def _bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"{name} must be a whole number from {low} to {high}, not {text!r}")
        return int(text)

    return parse


_limit, _tail, _keep = _bounded("--limit", 1, 200), _bounded("--tail", 1, 5000), _bounded("--keep", 0, 50)


def _command(name: str) -> Callable[[argparse.Namespace, Console], int]:
    module, _, function = COMMANDS[name].partition(":")
    found: Callable[[argparse.Namespace, Console], int] = getattr(importlib.import_module(module), function)
    return found


def run(argv: Sequence[str], console: Console) -> int:
    """Run one command and map every error to its exit code; never raises."""
    verbose = "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        return _command(args.command)(args, console)
    except UsageError as e:
        console.error(f"error: {e}")
        return Exit.INVALID
    except InvalidInput as e:
        console.problems(e.problems)
        return Exit.INVALID
    except (AgentUnreachable, AgentRefused) as e:
        console.error(f"error: {e}")
        return Exit.AGENT
    except DeployFailed as e:
        console.error(f"deploy failed: {e}")
        return Exit.FAILED
    except DeployplanError as e:  # pragma: no cover - every subclass is mapped above
        console.error(f"error: {e}")
        return Exit.FAILED
    except KeyboardInterrupt:
        console.error("interrupted")
        return Exit.INTERRUPTED
    except Exception as e:  # the last line of defence: a plain message, a traceback only with --verbose
        # Not str(e): an unexpected error may quote a value (a header, a variable) that is a secret.
        console.error(f"internal error: {type(e).__name__}" + ("" if verbose else " (run with --verbose for details)"))
        if verbose:
            traceback.print_exc(file=console.err)
        return Exit.FAILED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> NoReturn:
    """Console script entry point."""
    from runner.cli.console import Console

    # A cancelled GitHub job gets SIGINT, then SIGTERM: both stop following the same way (the deploy goes on).
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(
        out=sys.stdout, err=sys.stderr, github=os.environ.get("GITHUB_ACTIONS") == "true", environ=os.environ
    )
    sys.exit(run(sys.argv[1:], console))
