"""The command line's options: one parser per command, built only for the command that runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from runner import __version__
from runner.cli.errors import Answered, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

ENV_SCHEMA_PATH = "infra/ENV_SCHEMA.md"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """--help (and --version among other options) end here: raised to run(), the one place that exits."""
        if message:
            self._print_message(message)
        raise Answered(status)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command by name (for --help and usage errors), with the options of `command` only: a run needs no
    other command's options, and building them all is most of the start's cost."""
    parser = _Parser(prog="deployplan", description="Manual, explicit, auditable deploys of one runtime image.")
    parser.add_argument("--version", action="version", version=f"deployplan {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show a traceback on unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, add in _OPTIONS.items():
        sub = commands.add_parser(name, help=_HELP[name], add_help=name == command)
        if name == command:
            add(sub)
    return parser


def _lint(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", type=Path, help="plan files or folders (default: plans/)")
    p.add_argument("--repository", help="owner/repo to render with (default: GITHUB_REPOSITORY, else a sample)")
    _env_schema(p)


def _render(p: argparse.ArgumentParser) -> None:
    _plan_arguments(p)
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")


def _dry_run(p: argparse.ArgumentParser) -> None:
    _plan_arguments(p)
    _env_schema(p)
    p.add_argument("--agent", help="ask this agent what it would do (default: DEPLOY_AGENT_URL, else local only)")


def _apply(p: argparse.ArgumentParser) -> None:
    _plan_arguments(p)
    _env_schema(p)
    _agent(p)
    p.add_argument("--confirm", help="required for prod: exactly prod:<tag>")


def _status(p: argparse.ArgumentParser) -> None:
    _agent(p)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")


def _history(p: argparse.ArgumentParser) -> None:
    _agent(p)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--limit", type=_limit, default=20, help="how many, 1-200 (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")


def _logs(p: argparse.ArgumentParser) -> None:
    _agent(p)
    p.add_argument("--env", required=True, help="the environment, e.g. dev")
    p.add_argument("--tail", type=_tail, default=200, help="how many lines, 1-5000 (default: %(default)s)")
    p.add_argument("--since", help="only lines from this long ago (10m, 2h, 90s) or since an RFC 3339 time")


def _prune(p: argparse.ArgumentParser) -> None:
    _agent(p)
    p.add_argument("--keep", type=_keep, required=True, help="keep the newest K successful digests per environment")
    p.add_argument("--yes", action="store_true", help="remove them; without it, only show what would go")


def _audit(p: argparse.ArgumentParser) -> None:
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


def _check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="dev or prod")
    p.add_argument("--tag", help="also dry-run this tag at the agent: the registry is asked whether it exists")
    p.add_argument("--agent", help="the agent's URL (default: DEPLOY_AGENT_URL)")
    p.add_argument("--github", action="store_true", help="also read the repository's settings through GitHub's API")
    p.add_argument("--repository", help="owner/repo (default: GITHUB_REPOSITORY)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--plan", type=Path, default=Path("plans/runtime.yaml"), help="the plan (default: %(default)s)")
    _env_schema(p)


_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "lint": _lint,
    "render": _render,
    "dry-run": _dry_run,
    "apply": _apply,
    "status": _status,
    "history": _history,
    "logs": _logs,
    "prune": _prune,
    "audit": _audit,
    "check": _check,
}
_HELP = {
    "lint": "lint plan files, the variable table and the deploy workflow",
    "render": "print the rendered, validated plan",
    "dry-run": "show exactly what a deploy would do; touches nothing",
    "apply": "deploy: send the plan, follow the four steps, verify the result",
    "status": "show what runs where",
    "history": "the newest deployments: who deployed what, when, and how it ended",
    "logs": "the runtime's recent output (secret values masked)",
    "prune": "remove old runtime images from the server (lists only, unless --yes)",
    "audit": "the audit log",
    "check": "prove the setup before a deploy: plan, variables, agent, tag, GitHub settings; changes nothing",
}


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
