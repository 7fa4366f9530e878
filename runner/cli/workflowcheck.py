"""Checks that the deploy workflow maps exactly the runtime variables of ENV_SCHEMA.md, in every step that runs
`deployplan check`, `apply` or `dry-run`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.core.envschema import EnvSchema
from runner.core.errors import InvalidInput
from runner.core.problems import Problem
from runner.core.yamlsource import Located, load_yaml

DEFAULT_PATH = Path(".github/workflows/deploy.yml")
# Variables of the deploy step that configure deployplan itself, not the runtime.
TOOL_PREFIXES = ("DEPLOY_", "CF_ACCESS_", "GITHUB_")
# The commands that read the runtime's variables: each step running one must map them all, and nothing else.
_READS_VARIABLES = re.compile(r"\bdeployplan\s+(apply|check|dry-run)\b")

_StepPath = tuple[str | int, ...]


def check_deploy_workflow(path: Path, schema: EnvSchema) -> list[Problem]:
    """Exactly one step runs `deployplan apply`; it, and every step that runs `deployplan check` or `dry-run`,
    maps every runtime variable and nothing else. A step that missed one would check or send another set than
    the deploy: `check` would FAIL a secret that is set, or not check one at all."""
    source = str(path)
    try:
        located = load_yaml(path.read_bytes(), filename=source)
    except InvalidInput as e:
        return e.problems
    except OSError as e:
        return [Problem(source, 1, 1, "", f"cannot read: {e.strerror}")]
    steps = _deployplan_steps(located)
    applies = sum("apply" in commands for _, _, commands in steps)
    if applies != 1:
        return [
            Problem(source, 1, 1, "jobs", f"expected exactly one step that runs `deployplan apply`, found {applies}")
        ]
    problems = []
    for step_path, step, commands in steps:
        problems += _mapping_problems(located, source, schema, step_path, step, commands)
    return problems


def _deployplan_steps(located: Located) -> list[tuple[_StepPath, dict[str, Any], list[str]]]:
    """Each step whose `run` calls deployplan's check, apply or dry-run, with its path and those commands."""
    found: list[tuple[_StepPath, dict[str, Any], list[str]]] = []
    for job_name, job in _mapping(_mapping(located.data).get("jobs")).items():
        for index, step in enumerate(_list(_mapping(job).get("steps"))):
            commands = _READS_VARIABLES.findall(str(_mapping(step).get("run", "")))
            if commands:
                found.append((("jobs", job_name, "steps", index), _mapping(step), commands))
    return found


def _mapping_problems(
    located: Located, source: str, schema: EnvSchema, step_path: _StepPath, step: dict[str, Any], commands: list[str]
) -> list[Problem]:
    """The runtime variables this step does not map (at its `env:`, or the step when it has none), and those it
    maps that the table does not list (at each one's key)."""
    env = _mapping(step.get("env"))
    mapped = {name for name in env if not name.startswith(TOOL_PREFIXES)}
    runs = " and ".join(f"`deployplan {c}`" for c in dict.fromkeys(commands))
    named = f"the step {step['name']!r} ({runs})" if isinstance(step.get("name"), str) else f"the step that runs {runs}"
    problems = []
    for var in schema.variables:
        if var.name not in mapped:
            line, col = located.where((*step_path, "env"))
            message = (
                f"not mapped in {named}; {schema.path}:{var.line} lists it, and every step that runs deployplan "
                "check, apply or dry-run must map it"
            )
            problems.append(Problem(source, line, col, f"env.{var.name}", message))
    for name in sorted(mapped - set(schema.names())):
        line, col = located.where((*step_path, "env", name), key=True)
        message = f"is not in {schema.path}; add it there or remove this mapping from {named}"
        problems.append(Problem(source, line, col, f"env.{name}", message))
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
