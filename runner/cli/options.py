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
    parser = _Parser(
        prog="deployplan",
        description="Manual, explicit, auditable deploys of one runtime image.",
        epilog="exit codes: 0 done, 1 failed, 2 bad usage or invalid input, 3 the agent is unreachable or refused,\n"
        "130 stopped with Ctrl-C; `deployplan COMMAND --help` has each command's example and exit codes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deployplan {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show a traceback on unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, add in _OPTIONS.items():
        if name != command:
            commands.add_parser(name, help=_HELP[name], add_help=False)
            continue
        add(
            commands.add_parser(
                name,
                help=_HELP[name],
                description=_HELP[name],
                epilog=_EPILOG[name],
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
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
    where = p.add_mutually_exclusive_group()
    where.add_argument("--agent", help="ask this agent what it would do (default: DEPLOY_AGENT_URL, else local only)")
    where.add_argument("--local", action="store_true", help="the local dry run only, even with DEPLOY_AGENT_URL set")
    p.add_argument("--confirm", help="as apply takes it (prod:<tag>); sent to the agent")


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
    p.add_argument("environment", nargs="?", metavar="ENV", help="the environment, e.g. dev (or --env ENV)")
    p.add_argument("--env", help="the environment, as ENV")
    p.add_argument("-f", "--follow", action="store_true", help="go on printing new lines until Ctrl-C")
    p.add_argument("--tail", type=_tail, default=200, help="how many lines, 1-5000 (default: %(default)s)")
    p.add_argument("--since", help="only lines from this long ago (10m, 2h, 90s) or since an RFC 3339 time")


def _prune(p: argparse.ArgumentParser) -> None:
    _agent(p)
    p.add_argument("--keep", type=_keep, required=True, help="keep the newest K successful digests per environment")
    p.add_argument("--yes", action="store_true", help="remove them; without it, only show what would go")


def _follow(p: argparse.ArgumentParser) -> None:
    p.add_argument("deployment_id", metavar="DEPLOYMENT_ID", help="as apply and history print it")
    _agent(p)


def _audit(p: argparse.ArgumentParser) -> None:
    audit = p.add_subparsers(dest="audit_command", metavar="{verify,pull}", required=True, parser_class=_Parser)
    raw = argparse.RawDescriptionHelpFormatter
    v = audit.add_parser(
        "verify",
        help="check the audit log's hash chain; name the first broken record",
        description="check a copy of the audit log's hash chain; name the first broken record",
        epilog=_EPILOG["audit verify"],
        formatter_class=raw,
    )
    v.add_argument("path", type=Path, help="the audit log, e.g. audit.jsonl (a copy kept by `audit pull`)")
    v.add_argument("--agent", help="also take as anchors the audit heads of the agent's last 200 deployments")
    pull = audit.add_parser(
        "pull",
        help="copy the agent's audit log into a file, or bring a copy up to date",
        description="copy the agent's audit log into a file, or bring a copy up to date",
        epilog=_EPILOG["audit pull"],
        formatter_class=raw,
    )
    _agent(pull)
    pull.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="the copy, e.g. audit.jsonl")
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
    "follow": _follow,
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
    "logs": "the runtime's recent output (secret values masked); --follow for new lines as they come",
    "follow": "re-attach to a deployment: its steps as apply prints them, then its outcome",
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


def _epilog(examples: str, codes: str) -> str:
    return f"example:\n{examples}\n\nexit codes:\n{codes}"


_AGENT_CODES = "  0    done\n  2    bad usage\n  3    the agent is unreachable or refused"
_EPILOG = {
    "lint": _epilog(
        "  deployplan lint\n  deployplan lint plans/runtime.yaml --repository acme/trader",
        "  0    no problems\n  1    problems (one line each: path:line:col: message)\n  2    bad usage",
    ),
    "render": _epilog(
        "  deployplan render plans/runtime.yaml --env dev --tag 1.0.3 --repository acme/trader",
        "  0    rendered and valid\n  2    invalid plan or input",
    ),
    "dry-run": _epilog(
        "  deployplan dry-run plans/runtime.yaml --env dev --tag 1.0.3 --local\n"
        "  deployplan dry-run plans/runtime.yaml --env prod --tag 1.0.3 --agent https://deploy.example.com \\\n"
        "      --confirm prod:1.0.3",
        "  0    it would deploy\n  2    invalid plan, variables or usage\n"
        "  3    the agent is unreachable, refused, cannot find the tag, or would not let you deploy",
    ),
    "apply": _epilog(
        "  deployplan apply plans/runtime.yaml --env prod --tag 1.0.3 --agent https://deploy.example.com \\\n"
        "      --confirm prod:1.0.3",
        "  0    deployed and verified through /v1/status\n  1    the deploy failed, or could not be verified\n"
        "  2    invalid plan, variables or usage; nothing was sent\n  3    the agent is unreachable or refused\n"
        "  130  stopped following (Ctrl-C, SIGTERM); the deploy goes on: `deployplan follow ID` re-attaches",
    ),
    "status": _epilog("  deployplan status --agent https://deploy.example.com --env prod", _AGENT_CODES),
    "history": _epilog("  deployplan history --agent https://deploy.example.com --env prod --limit 5", _AGENT_CODES),
    "logs": _epilog(
        "  deployplan logs dev --tail 50 --agent https://deploy.example.com\n  deployplan logs dev --follow",
        f"{_AGENT_CODES}\n  130  --follow stopped with Ctrl-C (or SIGTERM): its only way to end",
    ),
    "follow": _epilog(
        "  deployplan follow 3f9c2a71b0de --agent https://deploy.example.com",
        "  0    the deployment succeeded and /v1/status shows it running\n"
        "  1    it failed, was interrupted, or what runs now is not what it deployed\n"
        "  2    bad usage\n  3    the agent is unreachable, refused, or knows no such deployment\n"
        "  130  stopped following (Ctrl-C, SIGTERM); the deploy goes on",
    ),
    "prune": _epilog(
        "  deployplan prune --keep 3 --agent https://deploy.example.com\n  deployplan prune --keep 3 --yes",
        _AGENT_CODES,
    ),
    "audit": _epilog(
        "  deployplan audit pull --agent https://deploy.example.com -o audit.jsonl\n"
        "  deployplan audit verify audit.jsonl --agent https://deploy.example.com",
        "  see `deployplan audit verify --help` and `deployplan audit pull --help`",
    ),
    "audit verify": _epilog(
        "  deployplan audit verify audit.jsonl --anchor 42:3f1c...e9 --agent https://deploy.example.com",
        "  0    intact, and every anchor holds\n  1    broken, or an anchor does not hold (named)\n"
        "  2    bad usage\n  3    --agent given and the agent is unreachable or refused",
    ),
    "audit pull": _epilog(
        "  deployplan audit pull --agent https://deploy.example.com -o audit.jsonl",
        "  0    the copy is up to date\n"
        "  1    the copy's last record no longer matches the agent's (the seq is named), or the pages do not chain\n"
        "  2    bad usage\n  3    the agent is unreachable or refused",
    ),
    "check": _epilog(
        "  deployplan check --env dev\n"
        "  deployplan check --env prod --tag 1.0.3 --agent https://deploy.example.com \\\n"
        "      --github --repository acme/trader",
        "  0    no line is FAIL (warn lines may remain)\n  1    at least one FAIL, each saying what to change\n"
        "  2    bad usage",
    ),
}
