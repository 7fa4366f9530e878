"""The state directory: the agent's alone. Created 0700; one that others may write to stops the agent at start."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from agent.config import ConfigError
from agent.lock import create_lock_file
from agent.logs import log

AUDIT_FILE = "audit.jsonl"
LOCK_FILE = "deploy.lock"


def prepare(state_dir: Path) -> None:
    """Create the directory (0700) and the lock file; raise ConfigError when its group or others may write to it.

    Another local user who can write there could hold the deploy lock or replace the audit log. A directory
    that cannot be created or written (a full or read-only disk) is not refused here: the agent starts, answers
    reads, and refuses deploys with 503 until it is usable.
    """
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(state_dir.stat().st_mode)
    except OSError as e:
        log("state directory not usable: deploys refused", level=logging.ERROR, reason=str(e))
        return
    if mode & 0o022:
        raise ConfigError(
            [
                f"DEPLOY_AGENT_STATE_DIR={state_dir} is writable by its group or by everyone (mode {mode:04o}): "
                f"another local user could hold the deploy lock or rewrite the audit log; run chmod 700 {state_dir}"
            ]
        )
    try:
        create_lock_file(state_dir / LOCK_FILE)
    except OSError as e:
        log("state directory not usable: deploys refused", level=logging.ERROR, reason=str(e))
