"""The plan: load, render and validate it; the CLI reads it from a file, the agent from a request."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import InvalidInput
from runner.core.problems import Problem, field_path
from runner.core.render import Inputs, check_inputs, render_values
from runner.core.schema import schema_errors
from runner.core.yamlsource import MAX_BYTES, Located, load_yaml

# Control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs) and line/paragraph separators (Zl, Zp):
# invisible or misleading in a terminal, and schema patterns are matched with re.search, where `$` also matches
# before a final newline.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

Where = Callable[..., tuple[int, int]]


@dataclass(frozen=True)
class PullOptions:
    name: str
    timeout: int


@dataclass(frozen=True)
class StopRemoveOptions:
    name: str
    stop_timeout: int


@dataclass(frozen=True)
class StartOptions:
    name: str


@dataclass(frozen=True)
class VerifyOptions:
    name: str
    timeout: int
    stable_for: int


@dataclass(frozen=True)
class Plan:
    """A rendered plan that passed every check; `data` is exactly what is sent to the agent."""

    source: str
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["plan"])

    @property
    def environment(self) -> str:
        return str(self.data["environment"])

    @property
    def image(self) -> str:
        return str(self.data["image"])

    @property
    def repository(self) -> str:
        return self.image.rpartition(":")[0]

    @property
    def tag(self) -> str:
        return self.image.rpartition(":")[2]

    @property
    def pull(self) -> PullOptions:
        step = self.data["steps"][0]
        return PullOptions(name=step["name"], timeout=step["timeout"])

    @property
    def stop_remove(self) -> StopRemoveOptions:
        step = self.data["steps"][1]
        return StopRemoveOptions(name=step["name"], stop_timeout=step["stop_timeout"])

    @property
    def start(self) -> StartOptions:
        return StartOptions(name=self.data["steps"][2]["name"])

    @property
    def verify(self) -> VerifyOptions:
        step = self.data["steps"][3]
        return VerifyOptions(name=step["name"], timeout=step["timeout"], stable_for=step["stable_for"])

    def step_names(self) -> list[dict[str, str]]:
        """Each step's action and name, in order."""
        return [{"action": step["action"], "name": step["name"]} for step in self.data["steps"]]


def read_plan_file(path: Path) -> bytes:
    """The raw bytes of a plan file, refusing what is not a readable, small regular file."""
    name = str(path)
    try:
        if not path.is_file():
            raise InvalidInput([Problem(name, 1, 1, "", "no such plan file (or not a regular file)")])
        if path.stat().st_size > MAX_BYTES:
            raise InvalidInput(
                [Problem(name, 1, 1, "", f"file is {path.stat().st_size} bytes; a plan may have at most {MAX_BYTES}")]
            )
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput([Problem(name, 1, 1, "", f"cannot read: {e.strerror}")]) from e


def load_plan(raw: bytes, *, source: str, env: str, tag: str, repository: str | None) -> Plan:
    """Parse, check the inputs, render, validate; raises InvalidInput with every problem found."""
    inputs, problems = check_inputs(env=env, tag=tag, repository=repository, source="command line")
    if problems:
        raise InvalidInput(problems)
    return render_plan(load_yaml(raw, filename=source), source=source, inputs=inputs)


def render_plan(located: Located, *, source: str, inputs: Inputs) -> Plan:
    """Render a parsed plan with validated inputs and check the result; raises InvalidInput with every problem."""
    rendered, problems = render_values(located.data, inputs=inputs, source=source, where=located.where)
    if problems:
        raise InvalidInput(problems)
    problems = check_plan(rendered, source=source, where=located.where, env=inputs.env, tag=inputs.tag)
    if problems:
        raise InvalidInput(problems)
    return Plan(source=source, data=rendered)


def check_plan(
    data: Any, *, source: str, where: Where | None = None, env: str | None = None, tag: str | None = None
) -> list[Problem]:
    """Every problem of a rendered plan: the schema, the four-step template, and the rules a schema cannot say."""

    def problem(path: tuple[str | int, ...], message: str, *, key: bool = False) -> Problem:
        line, col = where(path, key=key) if where else (0, 0)
        return Problem(source, line, col, field_path(path), message)

    found = schema_errors("plan.schema.json", data)
    # A step in the wrong place also fails its options' checks; its place is the one thing worth saying.
    misplaced = {path[:2] for path, _, message in found if path[-1:] == ("action",) and path[:1] == ("steps",)}
    problems = [
        problem(path, message, key=is_key)
        for path, is_key, message in found
        if path[:2] not in misplaced or path[-1:] == ("action",)
    ]
    problems.extend(problem(path, message) for path, message in _rules(data, env=env, tag=tag))
    return sorted(problems, key=lambda p: (p.line, p.col, p.field))


def _rules(data: Any, *, env: str | None, tag: str | None) -> list[tuple[tuple[str | int, ...], str]]:
    if not isinstance(data, dict):
        return []  # the schema already says what a plan must be
    found: list[tuple[tuple[str | int, ...], str]] = []
    for path, value in _scalars(data, ()):
        if isinstance(value, str) and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
            found.append((path, "control and format characters (newline, tab, bidi overrides, ...) are not allowed"))
        # JSON Schema counts 600.0 as an integer; the Docker API and the operator reading the plan do not.
        if isinstance(value, float) and value.is_integer():
            found.append((path, f"expected an integer, found number {value!r}; write it without a decimal point"))
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) == 4 and isinstance(steps[3], dict):
        timeout, stable_for = steps[3].get("timeout"), steps[3].get("stable_for")
        if isinstance(timeout, int) and isinstance(stable_for, int) and stable_for > timeout:
            found.append(
                (("steps", 3, "stable_for"), f"{stable_for} is above the step's timeout ({timeout}); it must fit in it")
            )
    if env is not None and isinstance(data.get("environment"), str) and data["environment"] != env:
        found.append((("environment",), f"renders to {data['environment']!r} but the requested environment is {env!r}"))
    image = data.get("image")
    if tag is not None and isinstance(image, str) and ":" in image and image.rpartition(":")[2] != tag:
        found.append((("image",), f"image tag is {image.rpartition(':')[2]!r} but the requested tag is {tag!r}"))
    return found


def _scalars(value: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _scalars(v, (*path, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _scalars(v, (*path, i))]
    return [(path, value)]
