"""The strict parser of infra/ENV_SCHEMA.md, and the runtime variables read from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.core.errors import InvalidInput
from runner.core.problems import Problem
from runner.core.secrets import Secret

DEFAULT_PATH = Path("infra/ENV_SCHEMA.md")
HEADER = ("Variable", "Required", "Secret", "Description")
NAME_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_SEPARATOR_CELL = re.compile(r":?-{3,}:?")
_UNTERMINATED = "<unterminated row>"


@dataclass(frozen=True)
class Variable:
    """One row of the table."""

    name: str
    required: bool
    secret: bool
    description: str
    line: int


@dataclass(frozen=True)
class EnvSchema:
    """The runtime's variables, in the table's order."""

    path: str
    variables: tuple[Variable, ...]

    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def read(self, environ: Mapping[str, str]) -> tuple[dict[str, str | Secret], list[str]]:
        """The listed variables set in `environ` (secrets wrapped), and the required ones missing.

        Empty counts as not set: GitHub Actions turns a secret that is not set into "", and the runtime
        treats "" as missing; so an empty required variable is missing, and an empty optional one is not sent.
        """
        values: dict[str, str | Secret] = {}
        missing = []
        for var in self.variables:
            value = environ.get(var.name, "")
            if value:
                values[var.name] = Secret(value) if var.secret else value
            elif var.required:
                missing.append(var.name)
        return values, missing


def load_env_schema(path: Path) -> EnvSchema:
    """Read and parse the table; raises InvalidInput with every problem and its line."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InvalidInput([Problem(str(path), 1, 1, "", f"cannot read the variable table: {reason}")]) from e
    return parse_env_schema(text, source=str(path))


def parse_env_schema(text: str, *, source: str) -> EnvSchema:
    """Parse the one markdown table of `Variable | Required | Secret | Description` rows."""
    problems: list[Problem] = []
    tables = _tables(text)
    if len(tables) != 1:
        found = "no table" if not tables else f"{len(tables)} tables (lines {', '.join(str(t[0][0]) for t in tables)})"
        raise InvalidInput(
            [
                Problem(
                    source,
                    tables[1][0][0] if len(tables) > 1 else 1,
                    1,
                    "",
                    f"expected exactly one table of variables, found {found}",
                )
            ]
        )
    rows = tables[0]
    (header_line, header), *rest = rows
    if tuple(header) != HEADER:
        problems.append(
            Problem(
                source,
                header_line,
                1,
                "",
                f"the header must be | {' | '.join(HEADER)} |, found | {' | '.join(header)} |",
            )
        )
    if not rest or not all(_SEPARATOR_CELL.fullmatch(c) for c in rest[0][1]) or len(rest[0][1]) != len(HEADER):
        problems.append(
            Problem(
                source, header_line + 1, 1, "", "the header must be followed by a separator row like |---|---|---|---|"
            )
        )
        raise InvalidInput(problems)
    variables: list[Variable] = []
    seen: dict[str, int] = {}
    for line, cells in rest[1:]:
        variable = _row(cells, line=line, source=source, problems=problems)
        if variable is None:
            continue
        if variable.name in seen:
            problems.append(
                Problem(source, line, 1, variable.name, f"listed twice (first at line {seen[variable.name]})")
            )
            continue
        seen[variable.name] = line
        variables.append(variable)
    if not variables and not problems:
        problems.append(Problem(source, header_line, 1, "", "the table lists no variables"))
    if problems:
        raise InvalidInput(problems)
    return EnvSchema(path=source, variables=tuple(variables))


def _tables(text: str) -> list[list[tuple[int, list[str]]]]:
    tables: list[list[tuple[int, list[str]]]] = []
    current: list[tuple[int, list[str]]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("|"):
            terminated = line.endswith("|") and len(line) > 1
            # Markdown writes a | inside a cell as \|.
            inner = line[1:-1] if terminated else ""
            cells = (
                [c.strip().replace("\\|", "|") for c in _CELL_SEPARATOR.split(inner)] if terminated else [_UNTERMINATED]
            )
            if current is None:
                current = []
                tables.append(current)
            current.append((number, cells))
        else:
            current = None
    return tables


def _row(cells: list[str], *, line: int, source: str, problems: list[Problem]) -> Variable | None:
    if cells == [_UNTERMINATED]:
        problems.append(Problem(source, line, 1, "", "a row must start and end with |"))
        return None
    if len(cells) != len(HEADER):
        problems.append(
            Problem(
                source,
                line,
                1,
                "",
                f"a row needs {len(HEADER)} cells ({', '.join(HEADER)}), found {len(cells)}"
                + (" (write a | inside a cell as \\|)" if len(cells) > len(HEADER) else ""),
            )
        )
        return None
    raw_name, required, secret, description = cells
    name = raw_name[1:-1] if len(raw_name) > 2 and raw_name[0] == raw_name[-1] == "`" else raw_name
    before = len(problems)
    if not NAME_PATTERN.fullmatch(name):
        problems.append(Problem(source, line, 1, name or "Variable", "a variable name must match ^[A-Z][A-Z0-9_]*$"))
    for column, value in (("Required", required), ("Secret", secret)):
        if value not in ("yes", "no"):
            problems.append(Problem(source, line, 1, name, f"{column} must be 'yes' or 'no', found {value!r}"))
    if not description:
        problems.append(Problem(source, line, 1, name, "the description is empty; say what the variable is for"))
    if len(problems) > before:
        return None
    return Variable(name=name, required=required == "yes", secret=secret == "yes", description=description, line=line)
