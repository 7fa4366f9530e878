"""The pure layer of plans, in process: rendering, the template allow-list, check_plan and the schema's patterns."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jsonschema import Draft202012Validator

from runner.core.plan import Plan, check_plan, load_plan
from runner.core.problems import Problem
from runner.core.render import TAG_PATTERN, Inputs, check_inputs, render_values, sandbox

REPO = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = json.loads((REPO / "schemas" / "plan.schema.json").read_text("utf-8"))
INPUTS = Inputs(env="prod", tag="1.0.3", repository="acme/trader")
ONLY = "only {{ env }}, {{ tag }}, {{ repository }} may appear"


def where(path: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
    """Every value of the test data sits at line 7, column 3."""
    return 7, 3


def render_one(template: str) -> tuple[Any, list[Problem]]:
    """A template as the name of the third step, rendered with INPUTS."""
    data = {"steps": [{}, {}, {"name": template}]}
    return render_values(data, inputs=INPUTS, source="p.yaml", where=where)


def runtime_plan(*, env: str = "dev", tag: str = "1.0.3") -> Plan:
    raw = (REPO / "plans" / "runtime.yaml").read_bytes()
    return load_plan(raw, source="plans/runtime.yaml", env=env, tag=tag, repository="acme/trader")


# -- rendering: what is allowed


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ env }}", "prod"),
        ("{{env}}", "prod"),
        ("{{   tag   }}", "1.0.3"),
        ("{{\nrepository\n}}", "acme/trader"),
        ("ghcr.io/{{ repository }}/runtime:{{ tag }}", "ghcr.io/acme/trader/runtime:1.0.3"),
        ("{{ env }}-{{ env }}", "prod-prod"),
        ("Deploy {{ tag }} to {{ env }}", "Deploy 1.0.3 to prod"),
        ("plain text", "plain text"),
        ("", ""),
        ("a { b } c", "a { b } c"),
        ("{ env }", "{ env }"),
        ("}} {{ env }}", "}} prod"),
        ("100% {{ tag }}", "100% 1.0.3"),
        ("# for x in y", "# for x in y"),
        ("<b>{{ env }}</b> & co", "<b>prod</b> & co"),
    ],
)
def test_allowed_template(template: str, expected: str) -> None:
    rendered, problems = render_one(template)
    assert problems == []
    assert rendered["steps"][2]["name"] == expected


# -- rendering: every other construct is refused, with the field and the place


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ cycler.__init__ }}", f"template expression (getattr) is not allowed; {ONLY}"),
        ("{{ ''.__class__ }}", "template expression (getattr) is not allowed"),
        ("{{ env.upper() }}", "template expression (call) is not allowed"),
        ("{{ range(10) }}", "template expression (call) is not allowed"),
        ("{{ namespace() }}", "template expression (call) is not allowed"),
        ("{{ env[0] }}", "template expression (getitem) is not allowed"),
        ("{{ 'x' }}", "template expression (const) is not allowed"),
        ("{{ 1 + 1 }}", "template expression (add) is not allowed"),
        ("{{ env ~ tag }}", "template expression (concat) is not allowed"),
        ("{{ env if tag }}", "template expression (condexpr) is not allowed"),
        ("{{ [env] }}", "template expression (list) is not allowed"),
        ("{{ env is defined }}", "template expression (test) is not allowed"),
        ("{{ tag|attr('x') }}", "template expression (filter) is not allowed"),
        ("{{ env|e }}", "template expression (filter) is not allowed"),
        ("{{ lipsum }}", f"unknown variable 'lipsum'; {ONLY}"),
        ("{{ self }}", "unknown variable 'self'"),
        ("{{ config }}", "unknown variable 'config'"),
        ("{{ loop }}", "unknown variable 'loop'"),
        ("{{ ENV }}", "unknown variable 'ENV'"),
        ("{{ owner }}", "unknown variable 'owner'"),
        ("{% include 'x' %}", f"template statements (include) are not allowed; {ONLY}"),
        ("{% import 'x' as y %}", "template statements (import) are not allowed"),
        ("{% extends 'x' %}", "template statements (extends) are not allowed"),
        ("{% for x in y %}{{ x }}{% endfor %}", "template statements (for) are not allowed"),
        ("{% if env %}x{% endif %}", "template statements (if) are not allowed"),
        ("{% set x = 1 %}", "template statements (assign) are not allowed"),
        ("{% macro m() %}{% endmacro %}", "template statements (macro) are not allowed"),
        ("{% block b %}{% endblock %}", "template statements (block) are not allowed"),
        ("{% filter upper %}x{% endfilter %}", "template statements (filterblock) are not allowed"),
        ("{# why #}", f"template comments ({{# ... #}}) are not allowed; {ONLY}"),
        ("{% raw %}{{ env }}{% endraw %}", "template raw blocks ({% raw %}) are not allowed"),
        ("{%- raw -%}x{%- endraw -%}", "template raw blocks ({% raw %}) are not allowed"),
        ("a {{- env }}", "whitespace control ({{- or -}}) is not allowed"),
        ("{{ env -}} b", "whitespace control ({{- or -}}) is not allowed"),
        ("{{ env", "invalid template: unexpected end of template"),
        ("{{ }}", "invalid template: "),
        ("{% endfor %}", "invalid template: "),
    ],
)
def test_refused_template(template: str, message: str) -> None:
    rendered, problems = render_one(template)
    assert len(problems) == 1
    [problem] = problems
    assert (problem.file, problem.line, problem.col, problem.field) == ("p.yaml", 7, 3, "steps[2].name")
    assert problem.message.startswith(message)
    assert rendered["steps"][2]["name"] == template  # left as it was, never half-rendered


def test_every_bad_string_is_reported() -> None:
    data = {"environment": "{{ environment }}", "steps": [{"name": "{{ tag }}"}, {"name": "{{ tag|upper }}"}]}
    rendered, problems = render_values(data, inputs=INPUTS, source="p.yaml", where=where)
    assert [(p.field, p.message.split(";")[0]) for p in problems] == [
        ("environment", "unknown variable 'environment'"),
        ("steps[1].name", "template expression (filter) is not allowed"),
    ]
    assert rendered["steps"][0]["name"] == "1.0.3"


def test_keys_are_never_rendered() -> None:
    data = {"{{ env }}": {"{{ tag }}": "{{ tag }}"}, "{{ cycler.__init__ }}": "x"}
    rendered, problems = render_values(data, inputs=INPUTS, source="p.yaml", where=where)
    assert problems == []
    assert rendered == {"{{ env }}": {"{{ tag }}": "1.0.3"}, "{{ cycler.__init__ }}": "x"}


def test_values_that_are_not_strings_are_left_alone() -> None:
    data = {"a": 1, "b": True, "c": None, "d": [1.5, "{{ env }}", ["{{ tag }}"]], "e": {}}
    rendered, problems = render_values(data, inputs=INPUTS, source="p.yaml", where=where)
    assert problems == []
    assert rendered == {"a": 1, "b": True, "c": None, "d": [1.5, "prod", ["1.0.3"]], "e": {}}


# -- the sandbox itself: even without the allow-list, nothing from outside is reachable


def test_the_sandbox_has_no_globals_filters_or_tests() -> None:
    jinja = sandbox()
    assert isinstance(jinja, ImmutableSandboxedEnvironment)
    assert jinja.undefined is jinja2.StrictUndefined
    assert (jinja.globals, jinja.filters, jinja.tests) == ({}, {}, {})
    assert jinja.autoescape is False


@pytest.mark.parametrize("name", ["range", "lipsum", "cycler", "joiner", "namespace", "dict", "config", "os"])
def test_the_sandbox_knows_no_names(name: str) -> None:
    with pytest.raises(jinja2.UndefinedError):
        sandbox().from_string(f"{{{{ {name} }}}}").render()


@pytest.mark.parametrize("template", ["{{ env|upper }}", "{{ env|attr('x') }}", "{{ env is string }}"])
def test_the_sandbox_has_no_filters_or_tests_to_call(template: str) -> None:
    with pytest.raises(jinja2.TemplateAssertionError):
        sandbox().from_string(template)


def test_the_sandbox_refuses_private_attributes() -> None:
    with pytest.raises(jinja2.exceptions.SecurityError, match="unsafe"):
        sandbox().from_string("{{ env.__class__ }}").render(env="dev")


# -- inputs


@pytest.mark.parametrize(
    ("env", "tag", "repository", "fields"),
    [
        ("dev", "1.0.3", "acme/trader", []),
        ("prod", "a" * 40, "Acme/Trader", []),
        ("staging", "1.0.3", "acme/trader", ["--env"]),
        ("dev", "latest", "acme/trader", ["--tag"]),
        ("dev", "1.0.3", "acme", ["--repository"]),
        ("", "", "", ["--env", "--tag", "--repository"]),
    ],
)
def test_check_inputs(env: str, tag: str, repository: str, fields: list[str]) -> None:
    inputs, problems = check_inputs(env=env, tag=tag, repository=repository, source="s")
    assert [p.field for p in problems] == fields
    assert inputs.repository == repository.lower()


# -- check_plan on JSON bodies (the agent's use): JSON paths, no positions


def _body() -> dict[str, Any]:
    return json.loads(json.dumps(runtime_plan().data))


def _change(path: str, value: Any) -> dict[str, Any]:
    body = _body()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = body
    for part in parents:
        target = target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return body


_DELETE = object()

# (body, the problem's field, its message, whether a plain JSON Schema validator also refuses the body)
BODIES = [
    pytest.param(
        _change("steps.1.action", "restart"),
        "steps[1].action",
        "step 2 must be 'stop_remove' (the steps are pull, stop_remove, start, verify, in this order); found 'restart'",
        True,
        id="action",
    ),
    pytest.param(
        _change("steps.2.privileged", True),
        "steps[2].privileged",
        "unknown key 'privileged'; allowed here: action, name",
        True,
        id="step-key",
    ),
    pytest.param(
        _change("volumes", ["/:/host"]),
        "volumes",
        "unknown key 'volumes'; allowed here: environment, image, plan, steps, version",
        True,
        id="top-key",
    ),
    pytest.param(
        _change("steps.0.timeout", True),
        "steps[0].timeout",
        "expected an integer, found boolean True",
        True,
        id="bool",
    ),
    pytest.param(_change("steps.2", None), "steps[2]", "expected a mapping, found null", True, id="null-step"),
    pytest.param(_change("steps.3", _DELETE), "steps", "found 3 items; exactly four steps", True, id="three-steps"),
    pytest.param(_change("version", 2), "version", "expected 1, found 2", True, id="version"),
    pytest.param(
        _change("image", "ghcr.io/acme/trader/runtime:latest"),
        "image",
        "'ghcr.io/acme/trader/runtime:latest' is not valid: <registry>/<path>/runtime:<tag>",
        True,
        id="latest",
    ),
    pytest.param(
        _change("steps.1.stop_timeout", _DELETE),
        "steps[1]",
        "missing required key 'stop_timeout'",
        True,
        id="missing",
    ),
    # What JSON Schema cannot say, check_plan says.
    pytest.param(
        _change("steps.3.stable_for", 61),
        "steps[3].stable_for",
        "61 is above the step's timeout (60); it must fit in it",
        False,
        id="stable-for",
    ),
    pytest.param(
        _change("steps.0.timeout", 600.0),
        "steps[0].timeout",
        "expected an integer, found number 600.0; write it without a decimal point",
        False,
        id="integral-float",
    ),
    pytest.param(
        _change("steps.2.name", "Start\u202e it"),
        "steps[2].name",
        "control and format characters (newline, tab, bidi overrides, ...) are not allowed",
        False,
        id="bidi",
    ),
    pytest.param(
        _change("image", "ghcr.io/acme/trader/runtime:1.0.3\n"),
        "image",
        "control and format characters (newline, tab, bidi overrides, ...) are not allowed",
        False,
        id="trailing-newline",
    ),
]


@pytest.mark.parametrize(("body", "field", "message", "schema_refuses"), BODIES)
def test_check_plan_reports_json_paths_without_positions(
    body: dict[str, Any], field: str, message: str, schema_refuses: bool
) -> None:
    problems = check_plan(body, source="request")
    assert [(p.line, p.col, p.field) for p in problems] == [(0, 0, field)]
    assert problems[0].message.startswith(message)
    assert problems[0].json_path() == f"$.{field}"
    assert problems[0].format() == f"request: {field}: {problems[0].message}"


@pytest.mark.parametrize(("body", "field", "message", "schema_refuses"), BODIES)
def test_a_plain_validator_refuses_exactly_the_schema_cases(
    body: dict[str, Any], field: str, message: str, schema_refuses: bool
) -> None:
    assert bool(list(Draft202012Validator(SCHEMA).iter_errors(body))) is schema_refuses


def test_check_plan_of_a_body_that_is_not_a_mapping() -> None:
    [problem] = check_plan([], source="request")
    assert (problem.field, problem.json_path(), problem.message) == ("", "$", "expected a mapping, found list []")


def test_check_plan_compares_with_the_requested_environment_and_tag() -> None:
    problems = check_plan(_body(), source="request", env="prod", tag="1.0.4")
    assert [(p.field, p.message) for p in problems] == [
        ("environment", "renders to 'dev' but the requested environment is 'prod'"),
        ("image", "image tag is '1.0.3' but the requested tag is '1.0.4'"),
    ]


def test_check_plan_of_a_good_body_is_empty() -> None:
    assert check_plan(_body(), source="request", env="dev", tag="1.0.3") == []


# -- the committed plan against the committed schema, with nothing but jsonschema


@pytest.mark.parametrize(("env", "tag"), [("dev", "1.0.3"), ("prod", "1.0.3-dev"), ("prod", "0123abcd" * 5)])
def test_the_runtime_plan_passes_a_plain_validator(env: str, tag: str) -> None:
    plan = runtime_plan(env=env, tag=tag)
    Draft202012Validator.check_schema(SCHEMA)
    body = json.loads(json.dumps(plan.data))  # what is sent to the agent
    assert list(Draft202012Validator(SCHEMA).iter_errors(body)) == []
    assert (plan.environment, plan.tag, plan.repository) == (env, tag, "ghcr.io/acme/trader/runtime")
    assert [step["action"] for step in plan.data["steps"]] == ["pull", "stop_remove", "start", "verify"]


def test_rendering_does_not_change_the_parsed_plan() -> None:
    plan = runtime_plan()
    before = copy.deepcopy(plan.data)
    runtime_plan(env="prod")
    assert plan.data == before


# -- tags: runner.render.TAG_PATTERN (fullmatch) and the schema's $defs.tag.pattern agree

TAGS = [
    ("0.0.0", True),
    ("1.0.3", True),
    ("10.20.30", True),
    ("1.0.3-dev", True),
    ("1.0.0-rc.1", True),
    ("1.0.0-alpha-1", True),
    ("1.0.0-0", True),
    ("1.0.0-x.7.z.92", True),
    ("a" * 40, True),
    ("0123456789abcdef0123456789abcdef01234567", True),
    ("latest", False),
    ("v1.0.0", False),
    ("abc1234", False),
    ("1", False),
    ("1.0", False),
    ("01.0.0", False),
    ("1.00.0", False),
    ("1.0.00", False),
    ("1.0.0-", False),
    ("1.0.0-Dev", False),
    ("1.0.0+build.1", False),
    ("1.0.0-dev..1", False),
    ("A" * 40, False),
    ("a" * 39, False),
    ("a" * 41, False),
    ("g" * 40, False),
    ("sha256:" + "a" * 64, False),
    ("", False),
    (" 1.0.0", False),
    ("1.0.0 ", False),
    ("{{ tag }}", False),
    ("1.0.3;rm -rf /", False),
]


@pytest.mark.parametrize(("tag", "valid"), TAGS)
def test_tag_pattern_agrees_with_the_schema(tag: str, valid: bool) -> None:
    assert (TAG_PATTERN.fullmatch(tag) is not None) is valid
    assert Draft202012Validator(SCHEMA["$defs"]["tag"]).is_valid(tag) is valid
    image = Draft202012Validator(SCHEMA["$defs"]["image"])
    assert image.is_valid(f"ghcr.io/acme/trader/runtime:{tag}") is valid


@pytest.mark.parametrize(("tag", "valid"), TAGS)
def test_check_inputs_agrees_with_the_tag_pattern(tag: str, valid: bool) -> None:
    _, problems = check_inputs(env="dev", tag=tag, repository="acme/trader", source="s")
    assert (problems == []) is valid


def test_a_trailing_newline_passes_jsonschema_but_not_deployplan() -> None:
    # jsonschema matches `pattern` with re.search, where `$` also matches before a final newline (ECMA-262's does
    # not): hence fullmatch for --tag, and the control-character rule of check_plan for the image.
    assert Draft202012Validator(SCHEMA["$defs"]["tag"]).is_valid("1.0.3\n")
    assert TAG_PATTERN.fullmatch("1.0.3\n") is None
    _, problems = check_inputs(env="dev", tag="1.0.3\n", repository="acme/trader", source="s")
    assert [p.field for p in problems] == ["--tag"]
