"""The JSON Schemas shipped with the package, and schema validation that collects every error."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from runner.core.problems import field_path


def _read(name: str) -> dict[str, Any]:
    # Installed, the schemas live in the runner.schemas package (see setup.cfg's package_dir).
    data: dict[str, Any] = json.loads(resources.files("runner.schemas").joinpath(name).read_text("utf-8"))
    return data


PLAN_SCHEMA = _read("plan.schema.json")


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(PLAN_SCHEMA)
    return Registry().with_resource(PLAN_SCHEMA["$id"], resource)  # type: ignore[no-any-return]


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for one of the shipped schemas (`plan.schema.json`, `deploy-request.schema.json`).

    The schemas are checked against the 2020-12 metaschema by the unit tests, not here: that check alone was
    30 ms of every CLI start.
    """
    schema = PLAN_SCHEMA if name == "plan.schema.json" else _read(name)
    return Draft202012Validator(schema, registry=_registry())


def schema_errors(name: str, instance: Any) -> list[tuple[tuple[str | int, ...], bool, str]]:
    """Every schema error as (path, points at a key, message), sorted by path; never a raw ValidationError."""
    found = []
    for error in validator(name).iter_errors(instance):
        for leaf in _leaves(error):
            found.extend(_explain(leaf))
    return sorted(set(found), key=lambda item: (str(item[0]), item[2]))


def _leaves(error: ValidationError) -> list[ValidationError]:
    # Composite keywords (anyOf, $ref chains) hold the useful errors in their context.
    if error.context:
        return [leaf for sub in error.context for leaf in _leaves(sub)]
    return [error]


def _explain(error: ValidationError) -> list[tuple[tuple[str | int, ...], bool, str]]:
    path = tuple(error.absolute_path)
    value: Any = error.instance
    kind: Any = error.validator
    expected: Any = error.validator_value
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("description", "")
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = [key for key in value if key not in allowed]
        return [((*path, key), True, f"unknown key {key!r}; allowed here: {', '.join(allowed)}") for key in extras]
    if kind == "required":
        missing = [key for key in expected if key not in value]
        return [(path, False, f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")]
    if kind == "const" and path[-1:] == ("action",):
        number = int(path[-2]) + 1
        order = "pull, stop_remove, start, verify"
        return [
            (path, False, f"step {number} must be {expected!r} (the steps are {order}, in this order); found {value!r}")
        ]
    if kind == "const":
        return [(path, False, f"expected {expected!r}, found {value!r}")]
    if kind == "enum":
        return [(path, False, f"{value!r} is not one of {', '.join(map(repr, expected))}")]
    if kind == "type":
        found = "null" if value is None else f"{_type_name(value)} {value!r}"
        return [(path, False, f"expected {_a(expected)}, found {found}")]
    if kind in {"minimum", "maximum"}:
        return [(path, False, f"{value!r} is out of range: {hint}" if hint else f"{value!r} is out of range")]
    if kind in {"minItems", "maxItems", "items"}:
        count = len(value) if isinstance(value, list) else "?"
        steps_hint = hint or PLAN_SCHEMA["properties"]["steps"]["description"]
        return [(path[:1] if kind == "items" else path, False, f"found {count} items; {steps_hint}")]
    if kind == "pattern":
        return [(path, False, f"{value!r} is not valid: {hint}" if hint else f"{value!r} does not match {expected}")]
    if kind in {"minLength", "maxLength"}:
        return [(path, False, f"{value!r} has {len(value)} characters: {hint}" if hint else error.message)]
    return [(path, False, error.message)]


def _a(expected: Any) -> str:
    names = {"integer": "an integer", "string": "a string", "object": "a mapping", "array": "a list"}
    if isinstance(expected, list):
        return " or ".join(names.get(e, str(e)) for e in expected)
    return names.get(expected, str(expected))


def _type_name(value: Any) -> str:
    for kind, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (dict, "mapping"),
        (list, "list"),
    ):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


__all__ = ["PLAN_SCHEMA", "field_path", "schema_errors", "validator"]
