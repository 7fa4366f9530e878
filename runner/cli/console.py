"""Where a command writes: stdout and stderr, and whether GitHub Actions is reading them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from runner.core.problems import Problem


@dataclass
class Console:
    """Where a command writes, and whether GitHub Actions is reading it."""

    out: TextIO
    err: TextIO
    github: bool
    environ: Mapping[str, str] = field(default_factory=dict)

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
