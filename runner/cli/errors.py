"""The CLI's exit codes and errors; `runner.cli.main` maps each error to its exit code."""

from __future__ import annotations

from runner.core.errors import DeployplanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class Exit:
    """The exit codes of SPEC.md. Plain ints, not an IntEnum: `enum` (with `typing`, what it pulls in) would
    be a fifth of a lean start."""

    OK: Final = 0
    FAILED: Final = 1
    INVALID: Final = 2
    AGENT: Final = 3
    INTERRUPTED: Final = 130


class UsageError(DeployplanError):
    """The command line itself is wrong (exit 2)."""


class AgentUnreachable(DeployplanError):
    """The agent could not be reached or did not answer as an agent (exit 3)."""


class AgentRefused(DeployplanError):
    """The agent answered with an error and refused the request (exit 3)."""


class DeployFailed(DeployplanError):
    """The deploy ran and failed, or its result could not be verified (exit 1)."""
