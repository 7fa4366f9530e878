"""The strict parser of infra/ENV_SCHEMA.md, reading the variables, and the check of the deploy workflow's mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import InProcessCli as Cli
from runner.cli.workflowcheck import check_deploy_workflow
from runner.core.envschema import EnvSchema, load_env_schema, parse_env_schema
from runner.core.errors import InvalidInput
from runner.core.problems import Problem
from runner.core.secrets import MASK, Secret

REPO = Path(__file__).resolve().parents[2]
TABLE = "infra/ENV_SCHEMA.md"
HEADER = "| Variable | Required | Secret | Description |\n|---|---|---|---|\n"
ROW = "| `RUNTIME_ENV` | yes | no | The environment. |\n"
SECRET = "canary-secret-value-0123456789"


def problems_of(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_env_schema(text, source=TABLE)
    return [problem.format() for problem in caught.value.problems]


def repository_schema() -> EnvSchema:
    return load_env_schema(REPO / "infra" / "ENV_SCHEMA.md")


# -- the repository's table


def test_the_repository_table_lists_the_four_runtime_variables() -> None:
    schema = repository_schema()
    assert [(v.name, v.required, v.secret) for v in schema.variables] == [
        ("RUNTIME_ENV", True, False),
        ("RUNTIME_LOG_LEVEL", True, False),
        ("RUNTIME_API_TOKEN", True, True),
        ("RUNTIME_FAULT", False, False),
    ]
    lines = (REPO / "infra" / "ENV_SCHEMA.md").read_text().splitlines()
    for variable in schema.variables:
        assert lines[variable.line - 1].startswith(f"| `{variable.name}` |")
        assert variable.description


def test_names_may_go_without_backticks_and_separators_may_align() -> None:
    text = "| Variable | Required | Secret | Description |\n|:---|:---:|---:|----|\n| A_1 | no | yes | d |\n"
    [variable] = parse_env_schema(text, source=TABLE).variables
    assert (variable.name, variable.required, variable.secret, variable.line) == ("A_1", False, True, 3)


# -- malformed tables: every problem with its line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "# Variables\n\nnone yet\n",
            [f"{TABLE}:1:1: expected exactly one table of variables, found no table"],
            id="none",
        ),
        pytest.param(
            "# Variables\n\n" + HEADER + ROW + "\nmore:\n\n" + HEADER + ROW,
            [f"{TABLE}:9:1: expected exactly one table of variables, found 2 tables (lines 3, 9)"],
            id="two-tables",
        ),
        pytest.param(
            "| Name | Required | Secret | Description |\n|---|---|---|---|\n" + ROW,
            [
                f"{TABLE}:1:1: the header must be | Variable | Required | Secret | Description | or "
                "| Variable | Required | Secret | Rule | Description |, "
                "found | Name | Required | Secret | Description |"
            ],
            id="wrong-header",
        ),
        pytest.param(
            "| Variable | Required | Description |\n|---|---|---|\n" + ROW,
            [
                f"{TABLE}:1:1: the header must be | Variable | Required | Secret | Description | or "
                "| Variable | Required | Secret | Rule | Description |, "
                "found | Variable | Required | Description |",
                f"{TABLE}:2:1: the header must be followed by a separator row like |---|---|---|---|",
            ],
            id="three-columns",
        ),
        pytest.param(
            HEADER.splitlines()[0] + "\n" + ROW,
            [f"{TABLE}:2:1: the header must be followed by a separator row like |---|---|---|---|"],
            id="no-separator",
        ),
        pytest.param(
            HEADER + "| `A` | yes | no |\n",
            [f"{TABLE}:3:1: a row needs 4 cells (Variable, Required, Secret, Description), found 3"],
            id="three-cells",
        ),
        pytest.param(
            HEADER + "| `A` | yes | no | d | e |\n",
            [
                f"{TABLE}:3:1: a row needs 4 cells (Variable, Required, Secret, Description), found 5"
                " (write a | inside a cell as \\|)"
            ],
            id="five-cells",
        ),
        pytest.param(
            HEADER + "| `A` | yes | no | d\n", [f"{TABLE}:3:1: a row must start and end with |"], id="unterminated-row"
        ),
        pytest.param(
            HEADER + "| `runtime_env` | yes | no | d |\n",
            [f"{TABLE}:3:1: runtime_env: a variable name must match ^[A-Z][A-Z0-9_]*$"],
            id="lowercase-name",
        ),
        pytest.param(
            HEADER + "| `1RUNTIME` | yes | no | d |\n",
            [f"{TABLE}:3:1: 1RUNTIME: a variable name must match ^[A-Z][A-Z0-9_]*$"],
            id="leading-digit",
        ),
        pytest.param(
            HEADER + "| `RUNTIME-ENV` | yes | no | d |\n",
            [f"{TABLE}:3:1: RUNTIME-ENV: a variable name must match ^[A-Z][A-Z0-9_]*$"],
            id="dash-in-name",
        ),
        pytest.param(
            HEADER + "|  | yes | no | d |\n",
            [f"{TABLE}:3:1: Variable: a variable name must match ^[A-Z][A-Z0-9_]*$"],
            id="empty-name",
        ),
        pytest.param(
            HEADER + "| `A` | Yes | no | d |\n",
            [f"{TABLE}:3:1: A: Required must be 'yes' or 'no', found 'Yes'"],
            id="required-Yes",
        ),
        pytest.param(
            HEADER + "| `A` | maybe | no | d |\n",
            [f"{TABLE}:3:1: A: Required must be 'yes' or 'no', found 'maybe'"],
            id="required-maybe",
        ),
        pytest.param(
            HEADER + "| `A` | yes | true | d |\n",
            [f"{TABLE}:3:1: A: Secret must be 'yes' or 'no', found 'true'"],
            id="secret-true",
        ),
        pytest.param(
            HEADER + "| `A` | yes | no |  |\n",
            [f"{TABLE}:3:1: A: the description is empty; say what the variable is for"],
            id="empty-description",
        ),
        pytest.param(
            HEADER + ROW + "| `B` | no | no | d |\n" + ROW,
            [f"{TABLE}:5:1: RUNTIME_ENV: listed twice (first at line 3)"],
            id="duplicate",
        ),
        pytest.param(HEADER, [f"{TABLE}:1:1: the table lists no variables"], id="no-rows"),
        pytest.param(
            HEADER + "| `a` | Yes | maybe |  |\n| `B` | no |\n",
            [
                f"{TABLE}:3:1: a: a variable name must match ^[A-Z][A-Z0-9_]*$",
                f"{TABLE}:3:1: a: Required must be 'yes' or 'no', found 'Yes'",
                f"{TABLE}:3:1: a: Secret must be 'yes' or 'no', found 'maybe'",
                f"{TABLE}:3:1: a: the description is empty; say what the variable is for",
                f"{TABLE}:4:1: a row needs 4 cells (Variable, Required, Secret, Description), found 2",
            ],
            id="every-problem-at-once",
        ),
    ],
)
def test_malformed_table(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_an_escaped_pipe_belongs_to_its_cell() -> None:
    [variable] = parse_env_schema(HEADER + "| `A` | yes | no | one \\| two |\n", source=TABLE).variables
    assert variable.description == "one | two"


def test_an_unreadable_table() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_env_schema(REPO / "infra" / "NO_SUCH_TABLE.md")
    [problem] = caught.value.problems
    assert problem.message.startswith("cannot read the variable table: ")


# -- reading the variables from an environment


def test_read_wraps_secrets_and_leaves_out_what_is_not_listed() -> None:
    environ = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": SECRET, "OTHER": "x"}
    values, missing = repository_schema().read(environ)
    assert missing == []
    assert values == {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": Secret(SECRET)}
    token = values["RUNTIME_API_TOKEN"]
    assert isinstance(token, Secret)
    assert token.reveal() == SECRET
    assert (str(token), repr(token), f"{token}") == (MASK, f"Secret({MASK})", MASK)
    assert SECRET not in repr(values) + str(values)


def test_read_names_every_missing_required_variable_in_table_order() -> None:
    values, missing = repository_schema().read({"RUNTIME_FAULT": "unhealthy"})
    assert missing == ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL", "RUNTIME_API_TOKEN"]
    assert values == {"RUNTIME_FAULT": "unhealthy"}


def test_an_empty_value_is_not_set() -> None:
    # A secret that is not set in GitHub Actions arrives as "", and the runtime refuses "" as missing:
    # an empty required variable is missing, an empty optional one is not sent.
    environ = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "", "RUNTIME_API_TOKEN": "", "RUNTIME_FAULT": ""}
    values, missing = repository_schema().read(environ)
    assert missing == ["RUNTIME_LOG_LEVEL", "RUNTIME_API_TOKEN"]
    assert values == {"RUNTIME_ENV": "dev"}


# -- the deploy workflow maps exactly the variables of the table

# Inputs reach the step through DEPLOY_-prefixed variables, which configure deployplan, not the runtime.
WORKFLOW = """\
name: Deploy
on:
  workflow_dispatch:
    inputs:
      environment: {type: choice, options: [dev, prod]}
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Deploy
        run: |
          deployplan apply plans/runtime.yaml --env "$DEPLOY_ENVIRONMENT" --tag "$DEPLOY_TAG"
        env:
          DEPLOY_ENVIRONMENT: ${{ inputs.environment }}
          DEPLOY_TAG: ${{ inputs.tag }}
          DEPLOY_AGENT_URL: ${{ vars.DEPLOY_AGENT_URL }}
          CF_ACCESS_CLIENT_ID: ${{ secrets.CF_ACCESS_CLIENT_ID }}
          GITHUB_TOKEN: ${{ github.token }}
          RUNTIME_ENV: ${{ inputs.environment }}
          RUNTIME_LOG_LEVEL: info
          RUNTIME_API_TOKEN: ${{ secrets.RUNTIME_API_TOKEN }}
          RUNTIME_FAULT: ""
"""
TABLE_PATH = REPO / "infra" / "ENV_SCHEMA.md"


def check(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "deploy.yml"
    path.write_text(text)
    return check_deploy_workflow(path, repository_schema())


def test_a_workflow_that_maps_exactly_the_table_is_clean(tmp_path: Path) -> None:
    # `on:` is the boolean True in YAML 1.1; the workflow's keys are read as their text.
    assert check(tmp_path, WORKFLOW) == []


def test_a_missing_variable_is_reported_at_the_env_mapping(tmp_path: Path) -> None:
    [problem] = check(tmp_path, WORKFLOW.replace('          RUNTIME_FAULT: ""\n', ""))
    table_line = repository_schema().variables[3].line
    assert problem == Problem(
        str(tmp_path / "deploy.yml"),
        15,
        11,
        "env.RUNTIME_FAULT",
        f"not mapped in the step 'Deploy' (`deployplan apply`); {TABLE_PATH}:{table_line} lists it, and every "
        "step that runs deployplan check, apply or dry-run must map it",
    )


def test_an_extra_variable_is_reported_at_its_key(tmp_path: Path) -> None:
    [problem] = check(tmp_path, WORKFLOW + "          RUNTIME_DEBUG: '1'\n")
    assert (problem.line, problem.col, problem.field) == (24, 11, "env.RUNTIME_DEBUG")
    assert problem.message == (
        f"is not in {TABLE_PATH}; add it there or remove this mapping from the step 'Deploy' (`deployplan apply`)"
    )


# The deploy job as deploy.yml has it: a step that runs `deployplan check` before the one that runs apply.
CHECK_STEP = """      - name: Check the setup
        run: deployplan check --env "$DEPLOY_ENVIRONMENT" --tag "$DEPLOY_TAG"
        env:
          DEPLOY_ENVIRONMENT: ${{ inputs.environment }}
          RUNTIME_ENV: ${{ inputs.environment }}
          RUNTIME_LOG_LEVEL: info
          RUNTIME_API_TOKEN: ${{ secrets.RUNTIME_API_TOKEN }}
          RUNTIME_FAULT: ""
"""
WITH_CHECK = WORKFLOW.replace("      - name: Deploy\n", CHECK_STEP + "      - name: Deploy\n")


def test_a_check_step_that_maps_exactly_the_table_is_clean(tmp_path: Path) -> None:
    assert check(tmp_path, WITH_CHECK) == []


def test_a_variable_missing_from_the_check_step_only_is_reported_there(tmp_path: Path) -> None:
    """It used to pass lint; every deploy job then stopped at check with `FAIL variable RUNTIME_API_TOKEN:
    required and not set`, a secret that was set."""
    text = WITH_CHECK.replace(
        CHECK_STEP, CHECK_STEP.replace("          RUNTIME_API_TOKEN: ${{ secrets.RUNTIME_API_TOKEN }}\n", "")
    )
    [problem] = check(tmp_path, text)
    assert (problem.line, problem.col, problem.field) == (14, 11, "env.RUNTIME_API_TOKEN")  # its env:
    assert problem.message.startswith("not mapped in the step 'Check the setup' (`deployplan check`); ")


def test_an_extra_variable_in_the_check_step_and_a_dry_run_step_without_env(tmp_path: Path) -> None:
    text = WITH_CHECK.replace(CHECK_STEP, CHECK_STEP + "          RUNTIME_DEBUG: '1'\n")
    text += "      - run: deployplan dry-run plans/runtime.yaml --env dev --tag 1.0.0\n"
    found = [(p.line, p.field, p.message.split(";")[0]) for p in check(tmp_path, text)]
    assert found == [
        (19, "env.RUNTIME_DEBUG", f"is not in {TABLE_PATH}"),
        *[
            (33, f"env.{name}", "not mapped in the step that runs `deployplan dry-run`")
            for name in repository_schema().names()
        ],
    ]


def test_every_missing_and_extra_variable_is_reported(tmp_path: Path) -> None:
    text = WORKFLOW.replace("RUNTIME_ENV:", "RUNTIME_ENVIRONMENT:").replace("RUNTIME_LOG_LEVEL:", "LOG_LEVEL:")
    assert [(p.line, p.field) for p in check(tmp_path, text)] == [
        (15, "env.RUNTIME_ENV"),
        (15, "env.RUNTIME_LOG_LEVEL"),
        (21, "env.LOG_LEVEL"),
        (20, "env.RUNTIME_ENVIRONMENT"),
    ]


@pytest.mark.parametrize("name", ["DEPLOY_AGENT_TOKEN", "CF_ACCESS_CLIENT_SECRET", "GITHUB_STEP_SUMMARY"])
def test_tool_variables_are_ignored(tmp_path: Path, name: str) -> None:
    assert check(tmp_path, WORKFLOW + f"          {name}: x\n") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            WORKFLOW.replace("deployplan apply", "deployplan dry-run"),
            ["jobs: expected exactly one step that runs `deployplan apply`, found 0"],
            id="no-apply-step",
        ),
        pytest.param(
            WORKFLOW + "      - run: deployplan apply plans/runtime.yaml\n",
            ["jobs: expected exactly one step that runs `deployplan apply`, found 2"],
            id="two-apply-steps",
        ),
        pytest.param("on: [push\n", ["not valid YAML: expected ',' or ']'"], id="not-yaml"),
        pytest.param("", ["the file is empty"], id="empty"),
    ],
)
def test_a_workflow_without_one_apply_step(tmp_path: Path, text: str, expected: list[str]) -> None:
    messages = [p.format().split(": ", 1)[1] for p in check(tmp_path, text)]
    assert len(messages) == len(expected)
    for message, start in zip(messages, expected, strict=True):
        assert message.startswith(start)


def test_a_missing_workflow(tmp_path: Path) -> None:
    [problem] = check_deploy_workflow(tmp_path / "deploy.yml", repository_schema())
    assert problem.message.startswith("cannot read: ")


# -- through the CLI


def test_lint_names_the_broken_table_line(cli: Cli, workspace: Path) -> None:
    table = workspace / "infra" / "ENV_SCHEMA.md"
    text = table.read_text()
    table.write_text(text.replace("| `RUNTIME_LOG_LEVEL` | yes |", "| `RUNTIME_LOG_LEVEL` | Yes |"))
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if "RUNTIME_LOG_LEVEL` |" in row)
    result = cli.run("lint", cwd=workspace)
    assert result.returncode == 1
    assert result.stderr == f"{TABLE}:{line}:1: RUNTIME_LOG_LEVEL: Required must be 'yes' or 'no', found 'Yes'\n"


def test_lint_checks_the_deploy_workflow(cli: Cli, workspace: Path) -> None:
    workflow = workspace / ".github" / "workflows" / "deploy.yml"
    workflow.parent.mkdir(parents=True, exist_ok=True)
    workflow.write_text(WORKFLOW + "          RUNTIME_DEBUG: '1'\n")
    result = cli.run("lint", cwd=workspace)
    assert result.returncode == 1
    assert result.stderr == (
        ".github/workflows/deploy.yml:24:11: env.RUNTIME_DEBUG: is not in infra/ENV_SCHEMA.md; "
        "add it there or remove this mapping from the step 'Deploy' (`deployplan apply`)\n"
    )
