"""Where a command writes: stdout and stderr, whether GitHub Actions is reading them, and whether to colour them."""

from __future__ import annotations

# typing, dataclasses and the problem module are not imported at start: `deployplan --version` starts lean.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TextIO

    from runner.core.problems import Problem

# Plain ANSI SGR codes: every terminal the operator uses knows them, and no library is loaded for four of them.
STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def wants_color(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour on a terminal only; never with NO_COLOR set (non-empty, no-color.org), which wins over everything;
    always with FORCE_COLOR set (non-empty and not `0`), e.g. for a CI log that shows colours."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR", "0") not in ("", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Console:
    """Where a command writes, whether GitHub Actions is reading it, and whether each stream takes colour."""

    def __init__(self, *, out: TextIO, err: TextIO, github: bool, environ: Mapping[str, str] | None = None) -> None:
        self.out, self.err, self.github = out, err, github
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        self.color_out, self.color_err = wants_color(out, self.environ), wants_color(err, self.environ)

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def style(self, text: str, *styles: str, err: bool = False) -> str:
        """`text` in the given styles (STYLES) when that stream takes colour; as it is otherwise. Apply it to text
        already made printable: the escape codes it adds must not be escaped themselves."""
        if not styles or not (self.color_err if err else self.color_out):
            return text
        return f"\033[{';'.join(STYLES[s] for s in styles)}m{text}\033[0m"

    def problems(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.error(problem.format())
        if self.github:
            for problem in problems:
                self.print(problem.github_annotation())
