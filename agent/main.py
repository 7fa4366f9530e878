"""`deploy-agent`: check the configuration, then become gunicorn with the project's config; `deploy-agent check`:
prove the configuration and the server around it, changing nothing."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from agent import statedir
from agent.config import ConfigError, load_config

USAGE = """usage: deploy-agent [check]

  deploy-agent        check the configuration (exit 2 naming every problem), then serve under gunicorn
  deploy-agent check  check the configuration, the state directory, the mount sources, Docker, the registry
                      login, the signing keys, free space and the bind address; changes nothing, starts nothing.
                      One line per check: ok, warn or FAIL. Exit 0 when no line is FAIL, 1 otherwise.

Load the unit's EnvironmentFile first (docs/server-setup.md, "Check before you start")."""


def main() -> NoReturn:
    """Dispatch: no argument serves, `check` checks; anything else is a usage error (exit 2)."""
    args = sys.argv[1:]
    if args == ["check"]:
        sys.exit(check())
    if args in (["-h"], ["--help"]):
        print(USAGE)
        sys.exit(0)
    if args:
        print(f"deploy-agent: unknown arguments {' '.join(args)!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    serve()


def check() -> int:
    """Print one line per check; 0 when none is FAIL, else 1."""
    from agent.checks import run_checks

    lines = run_checks(os.environ)
    for line in lines:
        print(line, flush=True)
    counts = {status: sum(line.status == status for line in lines) for status in ("ok", "warn", "FAIL")}
    print(f"{counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL; nothing was changed or started")
    return 1 if counts["FAIL"] else 0


def serve() -> NoReturn:
    """Refuse to start with a bad configuration (naming every problem), else exec gunicorn."""
    try:
        config = load_config(os.environ)
        statedir.prepare(config.state_dir)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:agent.gunicorn_conf",
        "--bind",
        config.bind,
        "agent.app:create_app()",
    ]
    # exec: systemd supervises gunicorn itself, and signals reach it directly.
    os.execv(sys.executable, argv)
