"""Rendering of a plan's string values with exactly three variables: env, tag and repository."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner.core.problems import Problem, field_path
from runner.core.schema import PLAN_SCHEMA

VARIABLES = ("env", "tag", "repository")
ENVIRONMENTS = tuple(PLAN_SCHEMA["$defs"]["environment"]["enum"])
TAG_PATTERN = re.compile(PLAN_SCHEMA["$defs"]["tag"]["pattern"])
# Both halves of owner/repo must be valid Docker path components once lowercased.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN = re.compile(rf"^{_COMPONENT}/{_COMPONENT}$")


@dataclass(frozen=True)
class Inputs:
    """The validated values a plan is rendered with; `repository` is None when none was given."""

    env: str
    tag: str
    repository: str | None


def check_inputs(*, env: str, tag: str, repository: str | None, source: str) -> tuple[Inputs, list[Problem]]:
    """Validate env, tag and repository (when given) before any rendering; the repository is lowercased."""
    problems = []
    if env not in ENVIRONMENTS:
        problems.append(
            Problem(source, 0, 0, "--env", f"{env!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}")
        )
    if not TAG_PATTERN.fullmatch(tag):
        problems.append(
            Problem(
                source, 0, 0, "--tag", f"{tag!r}: tag must be a full 40-hex commit SHA or a semantic version like 1.0.3"
            )
        )
    repository = None if repository is None else repository.lower()
    if repository is not None and not REPOSITORY_PATTERN.fullmatch(repository):
        problems.append(
            Problem(
                source,
                0,
                0,
                "--repository",
                f"{repository!r} is not owner/repo (e.g. acme/trader, from GITHUB_REPOSITORY)",
            )
        )
    return Inputs(env=env, tag=tag, repository=repository), problems


@cache
def sandbox() -> ImmutableSandboxedEnvironment:
    """The one sandbox every plan is rendered in: StrictUndefined, and nothing from outside reachable."""
    jinja = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    # No globals (range, lipsum, cycler, ...), no filters, no tests.
    jinja.globals.clear()
    jinja.filters.clear()
    jinja.tests.clear()
    return jinja


def render_string(text: str, inputs: Inputs) -> str:
    """Render one string, or raise ValueError saying which construct is not allowed."""
    if "{" not in text:
        return text
    template, names = _template(text)
    if "repository" in names and inputs.repository is None:
        raise ValueError(
            "uses {{ repository }}: give --repository owner/repo (or set GITHUB_REPOSITORY), e.g. acme/trader"
        )
    values = {"env": inputs.env, "tag": inputs.tag, "repository": inputs.repository}
    try:
        return template.render({name: values[name] for name in names})
    except TemplateError as e:  # pragma: no cover - the allow-list leaves nothing that can fail here
        raise ValueError(f"template error: {e.message}") from e


@lru_cache(maxsize=256)
def _template(text: str) -> tuple[Template, frozenset[str]]:
    """The compiled template and the variables it names; checked and compiled once (lint renders the same
    few strings for every plan and environment)."""
    jinja = sandbox()
    try:
        _check_tokens(jinja.lex(text))
        tree = jinja.parse(text)
        names = frozenset(name for node in tree.iter_child_nodes() for name in _allowed_names(node))
        return jinja.from_string(tree), names
    except TemplateError as e:
        raise ValueError(f"invalid template: {e.message}") from e
    except RecursionError:
        # Jinja's parser and compiler recurse once per nesting level; a plan value never nests.
        raise ValueError(f"the template nests too deeply; only {_allowed()} may appear") from None


def _check_tokens(tokens: Iterable[tuple[int, str, str]]) -> None:
    # Comments, raw blocks and whitespace control leave nothing in the parsed tree, so they are refused here.
    for _, kind, value in tokens:
        if kind in {"comment_begin", "raw_begin"}:
            what = "comments ({# ... #})" if kind == "comment_begin" else "raw blocks ({% raw %})"
            raise ValueError(f"template {what} are not allowed; only {_allowed()} may appear")
        if (kind == "variable_begin" and value != "{{") or (kind == "variable_end" and value.rstrip() != "}}"):
            raise ValueError(f"whitespace control ({{{{- or -}}}}) is not allowed; only {_allowed()} may appear")


def _allowed_names(node: nodes.Node) -> list[str]:
    """The variables an output node names; raises ValueError for anything but text and the three variables."""
    if not isinstance(node, nodes.Output):
        raise ValueError(f"template statements ({_describe(node)}) are not allowed; only {_allowed()} may appear")
    names = []
    for child in node.nodes:
        if isinstance(child, nodes.TemplateData):
            continue
        if isinstance(child, nodes.Name) and child.ctx == "load":
            if child.name not in VARIABLES:
                raise ValueError(f"unknown variable {child.name!r}; only {_allowed()} may appear")
            names.append(child.name)
            continue
        raise ValueError(f"template expression ({_describe(child)}) is not allowed; only {_allowed()} may appear")
    return names


def _describe(node: nodes.Node) -> str:
    return type(node).__name__.lower()


def _allowed() -> str:
    return ", ".join("{{ " + v + " }}" for v in VARIABLES)


def render_values(data: Any, *, inputs: Inputs, source: str, where: Any) -> tuple[Any, list[Problem]]:
    """Render every string value (never keys, never raw YAML text); collect a problem per bad template."""
    problems: list[Problem] = []

    def walk(value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str):
            try:
                return render_string(value, inputs)
            except ValueError as e:
                line, col = where(path)
                problems.append(Problem(source, line, col, field_path(path), str(e)))
                return value
        return value

    return walk(data, ()), problems
