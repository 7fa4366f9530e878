"""The root of deployplan's exceptions, and the one the core raises for input that fails validation."""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module is not imported at the CLI's start
if TYPE_CHECKING:
    from runner.core.problems import Problem


class DeployplanError(Exception):
    """Root of every error deployplan raises on purpose."""


class InvalidInput(DeployplanError):
    """A plan, a variable table or an input failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.format() for p in problems))
