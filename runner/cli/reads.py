"""`deployplan status`, `history` and `logs`: what the agent knows, read without touching anything."""

from __future__ import annotations

import argparse
import json
import time

from runner.cli.client import AgentClient, connect
from runner.cli.console import Console
from runner.cli.errors import Exit, UsageError
from runner.cli.report import history_table, status_table
from runner.core.shapes import LogLineDict
from runner.core.text import printable
from runner.core.times import since_timestamp


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    status = connect(args.agent, console.environ).status(args.env)
    if args.json:
        console.print(json.dumps(status, indent=2))
    else:
        for line in status_table(status):
            console.print(line)
    return Exit.OK


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    deployments = connect(args.agent, console.environ).history(args.env, args.limit)
    if args.json:
        console.print(json.dumps({"deployments": deployments}, indent=2))
    else:
        for line in history_table(deployments):
            console.print(line)
    return Exit.OK


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    env = _environment(args)
    since = _since(args.since) if args.since else None
    client = connect(args.agent, console.environ)
    if args.follow:
        return _follow(client, env, tail=args.tail, since=since, console=console)
    answer = client.logs(env, tail=args.tail, since=since)
    if answer.get("state") == "absent":
        console.error(f"{env}: no container {answer.get('container')}: nothing has been deployed, or it was removed")
        return Exit.OK
    for line in answer.get("lines", []):
        console.print(log_line(line, console))
    if answer.get("truncated"):
        console.error(
            "(cut: the agent keeps each line to 16 KiB and an answer to 1 MiB; narrow it with --tail or --since)"
        )
    return Exit.OK


def _follow(client: AgentClient, env: str, *, tail: int, since: str | None, console: Console) -> int:
    """Until Ctrl-C (or SIGTERM), its only way to end: exit 130, as apply stopped the same way."""
    from runner.cli.logfollow import follow_logs

    try:
        follow_logs(
            client,
            env,
            tail=tail,
            since=since,
            show=lambda line: console.print(log_line(line, console)),
            note=lambda text: console.error(console.style(printable(text), "bold", err=True)),
        )
    except KeyboardInterrupt:
        console.error(f"stopped following the log of {env}")
        return Exit.INTERRUPTED


def log_line(line: LogLineDict, console: Console) -> str:
    """One line as `logs` prints it: its time, a mark on stderr lines, the text with controls shown as escapes."""
    marker = console.style(" [stderr]", "yellow") if line.get("stream") == "stderr" else ""
    return f"{console.style(line.get('time') or '-', 'dim')}{marker} {printable(line.get('text', ''))}"


def _environment(args: argparse.Namespace) -> str:
    """ENV, or --env (the older form); both only when they agree."""
    if args.environment and args.env and args.environment != args.env:
        raise UsageError(f"logs: ENV {args.environment!r} and --env {args.env!r} differ: name the environment once")
    env: str | None = args.environment or args.env
    if not env:
        raise UsageError("logs: name the environment, e.g. deployplan logs dev (or --env dev)")
    return env


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> str:
    """--since as the agent takes it: seconds back (from 90s, 10m, 2h, 1d), or an RFC 3339 time as given; what
    the agent would refuse is refused here (exit 2, nothing asked)."""
    number, unit = text[:-1], text[-1:]
    sent = str(int(number) * _UNITS[unit]) if unit in _UNITS and number.isascii() and number.isdigit() else text
    if since_timestamp(sent, now=time.time()) is None:
        raise UsageError(
            f"--since {text!r}: use a duration like 90s, 10m, 2h or 1d (at most ten years), or an RFC 3339 time "
            "with its offset"
        )
    return sent
