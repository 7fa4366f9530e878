"""Checks that the deploy workflow maps exactly the runtime variables of ENV_SCHEMA.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.core.envschema import EnvSchema
from runner.core.errors import InvalidInput
from runner.core.problems import Problem
from runner.core.yamlsource import load_yaml

DEFAULT_PATH = Path(".github/workflows/deploy.yml")
# Variables of the deploy step that configure deployplan itself, not the runtime.
TOOL_PREFIXES = ("DEPLOY_", "CF_ACCESS_", "GITHUB_")


def check_deploy_workflow(path: Path, schema: EnvSchema) -> list[Problem]:
    """Every runtime variable must be mapped in the step that runs `deployplan apply`, and nothing else."""
    source = str(path)
    try:
        located = load_yaml(path.read_bytes(), filename=source)
    except InvalidInput as e:
        return e.problems
    except OSError as e:
        return [Problem(source, 1, 1, "", f"cannot read: {e.strerror}")]
    steps = [
        (job_name, index, step)
        for job_name, job in _mapping(_mapping(located.data).get("jobs")).items()
        for index, step in enumerate(_list(_mapping(job).get("steps")))
        if "deployplan apply" in str(_mapping(step).get("run", ""))
    ]
    if len(steps) != 1:
        return [
            Problem(source, 1, 1, "jobs", f"expected exactly one step that runs `deployplan apply`, found {len(steps)}")
        ]
    job_name, index, step = steps[0]
    step_path: tuple[str | int, ...] = ("jobs", job_name, "steps", index)
    env = _mapping(step.get("env"))
    mapped = {name for name in env if not name.startswith(TOOL_PREFIXES)}
    problems = []
    for var in schema.variables:
        if var.name not in mapped:
            line, col = located.where((*step_path, "env"))
            problems.append(
                Problem(
                    source,
                    line,
                    col,
                    f"env.{var.name}",
                    f"not mapped; {schema.path}:{var.line} lists it, so the deploy step must set it",
                )
            )
    for name in sorted(mapped - set(schema.names())):
        line, col = located.where((*step_path, "env", name), key=True)
        problems.append(
            Problem(source, line, col, f"env.{name}", f"is not in {schema.path}; add it there or remove this mapping")
        )
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
