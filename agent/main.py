"""`deploy-agent`: check the configuration, then become gunicorn with the project's config."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from agent import statedir
from agent.config import ConfigError, load_config


def main() -> NoReturn:
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
