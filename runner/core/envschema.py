"""The strict parser of infra/ENV_SCHEMA.md, and the runtime variables read from the environment."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.core.errors import InvalidInput
from runner.core.problems import Problem
from runner.core.secrets import Secret
from runner.core.text import forbidden_character, quoted
from runner.core.valuerules import Rule, RuleError, parse_rule

DEFAULT_PATH = Path("infra/ENV_SCHEMA.md")
HEADER = ("Variable", "Required", "Secret", "Description")
# The optional fifth column, between Secret and Description: a table without it has no value rules.
HEADER_WITH_RULES = ("Variable", "Required", "Secret", "Rule", "Description")
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
    rule: Rule | None = None
    rule_col: int = 0


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

    def check(self, environ: Mapping[str, str], *, environment: str) -> list[Problem]:
        """Every value the agent would refuse (`unsendable`, at the variable's row) or that breaks its rule (at the
        rule's place in the table), one problem per variable.

        An unset variable is not checked (a required one is missing, which `read` reports); a set one is, even
        empty, except a required one, which is missing when empty. A secret's value is never quoted.
        """
        problems = []
        for var in self.variables:
            value = environ.get(var.name)
            if value is None or (var.required and not value):
                continue
            shown = "(secret, not shown)" if var.secret else quoted(value, limit=80)
            refused = unsendable(value)
            if refused is not None:
                message = f"the value {shown} {refused}; nothing was sent"
                problems.append(Problem(self.path, var.line, 1, var.name, message))
                continue
            if var.rule is None:
                continue
            reason = var.rule.check(value, environment=environment)
            if reason is not None:
                message = f"the value {shown} breaks the rule '{var.rule.text}': {reason}; nothing was sent"
                problems.append(Problem(self.path, var.line, var.rule_col, var.name, message))
        return problems


def unsendable(value: str) -> str | None:
    """What in a value the agent refuses whatever the variable's rule (422): a control character, a trailing
    newline or a tab included, or a lone surrogate, named by its code point and never shown; None when it has
    none. Checked before sending, so that such a value stops the command with exit 2 instead of being sent,
    refused with exit 3 and counted as a refusal. A pasted secret's final line break is the usual one."""
    found = forbidden_character(value)
    if found is None:
        return None
    pasted = " (the value ends with a line break: pasted with it?)" if value.endswith(("\n", "\r")) else ""
    return f"contains {found}{pasted}, which the agent refuses: remove it"


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
    (header_line, header, _), *rest = rows
    columns = HEADER_WITH_RULES if tuple(header) == HEADER_WITH_RULES else HEADER
    if tuple(header) != columns:
        problems.append(
            Problem(
                source,
                header_line,
                1,
                "",
                f"the header must be | {' | '.join(HEADER)} | or | {' | '.join(HEADER_WITH_RULES)} |, "
                f"found | {' | '.join(header)} |",
            )
        )
    if not rest or not all(_SEPARATOR_CELL.fullmatch(c) for c in rest[0][1]) or len(rest[0][1]) != len(columns):
        separator = "|" + "---|" * len(columns)
        problems.append(
            Problem(source, header_line + 1, 1, "", f"the header must be followed by a separator row like {separator}")
        )
        raise InvalidInput(problems)
    variables: list[Variable] = []
    seen: dict[str, int] = {}
    for line, cells, cols in rest[1:]:
        variable = _row(cells, cols, columns=columns, line=line, source=source, problems=problems)
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


_Row = tuple[int, list[str], list[int]]


def _tables(text: str) -> list[list[_Row]]:
    """Each table's rows: the line number, the cells (stripped, `\\|` unescaped) and each cell's column."""
    tables: list[list[_Row]] = []
    current: list[_Row] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("|"):
            terminated = line.endswith("|") and len(line) > 1
            cells, cols = _cells(raw) if terminated else ([_UNTERMINATED], [1])
            if current is None:
                current = []
                tables.append(current)
            current.append((number, cells, cols))
        else:
            current = None
    return tables


def _cells(raw: str) -> tuple[list[str], list[int]]:
    """The cells of one `| a | b |` line and the 1-based column where each one's text starts."""
    start = len(raw) - len(raw.lstrip())
    inner_end = len(raw.rstrip()) - 1
    bounds = [start] + [m.start() for m in _CELL_SEPARATOR.finditer(raw, start + 1, inner_end)] + [inner_end]
    cells, cols = [], []
    for left, right in itertools.pairwise(bounds):
        piece = raw[left + 1 : right]
        # Markdown writes a | inside a cell as \|.
        cells.append(piece.strip().replace("\\|", "|"))
        cols.append(left + 2 + len(piece) - len(piece.lstrip()))
    return cells, cols


def _row(
    cells: list[str], cols: list[int], *, columns: tuple[str, ...], line: int, source: str, problems: list[Problem]
) -> Variable | None:
    if cells == [_UNTERMINATED]:
        problems.append(Problem(source, line, 1, "", "a row must start and end with |"))
        return None
    if len(cells) != len(columns):
        problems.append(
            Problem(
                source,
                line,
                1,
                "",
                f"a row needs {len(columns)} cells ({', '.join(columns)}), found {len(cells)}"
                + (" (write a | inside a cell as \\|)" if len(cells) > len(columns) else ""),
            )
        )
        return None
    raw_name, required, secret, *rule_cell, description = cells
    name = raw_name[1:-1] if len(raw_name) > 2 and raw_name[0] == raw_name[-1] == "`" else raw_name
    before = len(problems)
    if not NAME_PATTERN.fullmatch(name):
        problems.append(Problem(source, line, 1, name or "Variable", "a variable name must match ^[A-Z][A-Z0-9_]*$"))
    for column, value in (("Required", required), ("Secret", secret)):
        if value not in ("yes", "no"):
            problems.append(Problem(source, line, 1, name, f"{column} must be 'yes' or 'no', found {value!r}"))
    if not description:
        problems.append(Problem(source, line, 1, name, "the description is empty; say what the variable is for"))
    rule, rule_col = None, cols[3] if rule_cell else 0
    if rule_cell:
        try:
            rule = parse_rule(rule_cell[0])
        except RuleError as e:
            problems.append(Problem(source, line, rule_col, name, f"Rule: {e}"))
    if len(problems) > before:
        return None
    return Variable(
        name=name,
        required=required == "yes",
        secret=secret == "yes",
        description=description,
        line=line,
        rule=rule,
        rule_col=rule_col,
    )
