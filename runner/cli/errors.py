"""The CLI's exit codes and errors; `runner.cli.main` maps each error to its exit code."""

from __future__ import annotations

from enum import IntEnum

from runner.core.errors import DeployplanError


class Exit(IntEnum):
    """The exit codes of SPEC.md."""

    OK = 0
    FAILED = 1
    INVALID = 2
    AGENT = 3
    INTERRUPTED = 130


class UsageError(DeployplanError):
    """The command line itself is wrong (exit 2)."""


class AgentUnreachable(DeployplanError):
    """The agent could not be reached or did not answer as an agent (exit 3)."""


class AgentRefused(DeployplanError):
    """The agent answered with an error and refused the request (exit 3)."""


class DeployFailed(DeployplanError):
    """The deploy ran and failed, or its result could not be verified (exit 1)."""


class Answered(Exception):
    """argparse answered by itself (--help, --version) and would have exited; run() returns its status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
