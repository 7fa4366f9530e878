"""The one exception tree of deployplan: library code raises these, the CLI maps them to exit codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.problems import Problem


class DeployplanError(Exception):
    """Root of every error deployplan raises on purpose."""


class UsageError(DeployplanError):
    """The command line itself is wrong (exit 2)."""


class InvalidInput(DeployplanError):
    """A plan, a variable table or an input failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.format() for p in problems))


class AgentUnreachable(DeployplanError):
    """The agent could not be reached or did not answer as an agent (exit 3)."""


class AgentRefused(DeployplanError):
    """The agent answered with an error and refused the request (exit 3)."""


class DeployFailed(DeployplanError):
    """The deploy ran and failed, or its result could not be verified (exit 1)."""
