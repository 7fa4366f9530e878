"""Where a command writes: stdout and stderr, and whether GitHub Actions is reading them."""

from __future__ import annotations

# typing, dataclasses and the problem module are not imported at start: `deployplan --version` starts lean.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TextIO

    from runner.core.problems import Problem


class Console:
    """Where a command writes, and whether GitHub Actions is reading it."""

    def __init__(self, *, out: TextIO, err: TextIO, github: bool, environ: Mapping[str, str] | None = None) -> None:
        self.out, self.err, self.github = out, err, github
        self.environ: Mapping[str, str] = environ if environ is not None else {}

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def problems(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.error(problem.format())
        if self.github:
            for problem in problems:
                self.print(problem.github_annotation())
