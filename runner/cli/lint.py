"""`deployplan lint`: every plan for both environments, the variable table and the deploy workflow."""

from __future__ import annotations

from pathlib import Path

from runner.cli.errors import UsageError
from runner.cli.workflowcheck import check_deploy_workflow
from runner.core.envschema import load_env_schema
from runner.core.errors import InvalidInput
from runner.core.plan import read_plan_file, render_plan
from runner.core.problems import Problem
from runner.core.render import ENVIRONMENTS, check_inputs
from runner.core.yamlsource import load_yaml

SAMPLE_TAG = "1.0.0"
SAMPLE_REPOSITORY = "example/repository"
PLAN_SUFFIXES = (".yaml", ".yml")


def plan_files(paths: list[Path]) -> list[Path]:
    """The files to lint: files as given, directories searched for *.yaml and *.yml."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in PLAN_SUFFIXES and p.is_file()))
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return found


def lint(paths: list[Path], *, env_schema: Path, workflow: Path, repository: str | None) -> list[Problem]:
    """All problems found, deduplicated, in file and line order; empty when everything is clean."""
    if repository is not None:
        _, bad = check_inputs(env=ENVIRONMENTS[0], tag=SAMPLE_TAG, repository=repository, source="")
        if bad:
            raise UsageError(f"--repository: {bad[0].message}")
    problems: set[Problem] = set()
    for path in plan_files(paths):
        problems.update(lint_plan(path, repository=repository or SAMPLE_REPOSITORY))
    try:
        schema = load_env_schema(env_schema)
    except InvalidInput as e:
        problems.update(e.problems)
    else:
        if workflow.exists():
            problems.update(check_deploy_workflow(workflow, schema))
    return sorted(problems)


def lint_plan(path: Path, *, repository: str) -> set[Problem]:
    """A plan parsed once, rendered for every environment with a sample tag; the same problem is reported once."""
    source = str(path)
    try:
        located = load_yaml(read_plan_file(path), filename=source)
    except InvalidInput as e:
        return set(e.problems)
    problems: set[Problem] = set()
    for env in ENVIRONMENTS:
        inputs, bad = check_inputs(env=env, tag=SAMPLE_TAG, repository=repository, source=source)
        problems.update(bad)
        if bad:
            continue
        try:
            render_plan(located, source=source, inputs=inputs)
        except InvalidInput as e:
            problems.update(e.problems)
    return problems
