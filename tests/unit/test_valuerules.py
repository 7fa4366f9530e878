"""The value rules of ENV_SCHEMA.md's Rule column: the grammar, each rule against values, and the CLI refusing a
broken rule before anything is sent (dry-run and apply, in GitHub mode too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import InProcessCli as Cli
from runner.core.envschema import parse_env_schema
from runner.core.errors import InvalidInput
from runner.core.valuerules import RuleError, parse_rule

SECRET = "canary-secret-value-0123456789"
TABLE = "infra/ENV_SCHEMA.md"
HEADER = "| Variable | Required | Secret | Rule | Description |\n|---|---|---|---|---|\n"


@pytest.mark.parametrize(
    ("rule", "value", "environment", "reason"),
    [
        ("any", "", "dev", None),
        ("any", "whatever at all", "dev", None),
        ("environment", "dev", "dev", None),
        ("environment", "prod", "dev", "must be 'dev', the environment being deployed"),
        ("environment", "", "prod", "must be 'prod', the environment being deployed"),
        ("one of: debug, info, warning", "info", "dev", None),
        ("one of: debug, info, warning", "INFO", "dev", "must be one of: debug, info, warning"),
        ("one of: debug, info, warning", "info ", "dev", "must be one of: debug, info, warning"),
        ("one of:a,b", "b", "dev", None),
        ("at least 16 characters", "x" * 16, "dev", None),
        ("at least 16 characters", "x" * 15, "dev", "must be at least 16 characters long"),
        ("integer 1..65535", "8080", "dev", None),
        ("integer 1..65535", "0", "dev", "must be a decimal integer from 1 to 65535"),
        ("integer 1..65535", "65536", "dev", "must be a decimal integer from 1 to 65535"),
        ("integer 1..65535", " 80", "dev", "must be a decimal integer from 1 to 65535"),
        ("integer 1..65535", "0x50", "dev", "must be a decimal integer from 1 to 65535"),
        ("integer 1..65535", "", "dev", "must be a decimal integer from 1 to 65535"),
        ("integer -5..5", "-5", "dev", None),
        ("https URL", "https://api.example.com/v1", "dev", None),
        ("https URL", "http://api.example.com", "dev", "must be an absolute https:// URL with a host"),
        ("https URL", "https://", "dev", "must be an absolute https:// URL with a host"),
        ("https URL", "https:///path", "dev", "must be an absolute https:// URL with a host"),
        ("https URL", "api.example.com", "dev", "must be an absolute https:// URL with a host"),
        ("https URL", "https://a b.com", "dev", "must be an absolute https:// URL with a host"),
        ("https URL", "https://[::1", "dev", "must be an absolute https:// URL with a host"),
        ("pattern: `(crash-after-2s|unhealthy)?`", "", "dev", None),
        ("pattern: `(crash-after-2s|unhealthy)?`", "unhealthy", "dev", None),
        ("pattern: `[a-z]+`", "abc1", "dev", "must match the pattern `[a-z]+` in full"),
        ("pattern: `[a-z]+`", "abc\n", "dev", "must match the pattern `[a-z]+` in full"),
    ],
)
def test_a_rule_against_a_value(rule: str, value: str, environment: str, reason: str | None) -> None:
    assert parse_rule(rule).check(value, environment=environment) == reason


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("Any", "unknown rule 'Any'"),
        ("", "unknown rule ''"),
        ("at least 0 characters", "needs N of 1 or more"),
        ("at least -1 characters", "unknown rule"),
        ("at least 16 chars", "unknown rule"),
        ("integer 10..1", "needs MIN <= MAX, found 10..1"),
        ("integer 1-10", "unknown rule"),
        ("one of:", "needs words separated by commas"),
        ("one of: a,,b", "needs words separated by commas"),
        ("one of: a b, c", "needs words separated by commas"),
        ("one of: a, a", "lists a word twice"),
        ("pattern: [a-z]+", "unknown rule"),
        ("pattern: `[a-z`", "is not a valid regular expression"),
        ("https url", "unknown rule"),
        ("environment, any", "unknown rule"),
    ],
)
def test_a_malformed_rule_says_which_forms_there_are(rule: str, message: str) -> None:
    with pytest.raises(RuleError, match=None) as caught:
        parse_rule(rule)
    assert message in str(caught.value)


def test_a_malformed_rule_is_a_problem_at_its_line_and_column() -> None:
    text = HEADER + "| `A` | yes | no | any | d |\n"
    text += "| `B_2` | no  | no |   integer 9..1 | d |\n| C | no | no | wat | d |\n"
    with pytest.raises(InvalidInput) as caught:
        parse_env_schema(text, source=TABLE)
    assert [p.format() for p in caught.value.problems] == [
        f"{TABLE}:4:24: B_2: Rule: 'integer MIN..MAX' needs MIN <= MAX, found 9..1",
        f"{TABLE}:5:17: C: Rule: unknown rule 'wat'; a rule is exactly one of: any; environment; one of: a, b, c; "
        "at least N characters; integer MIN..MAX; https URL; pattern: `REGEX` (write a | as \\|)",
    ]


def test_an_escaped_pipe_in_a_pattern_is_part_of_it() -> None:
    [variable] = parse_env_schema(HEADER + "| `A` | no | no | pattern: `(x\\|y)` | d \\| e |\n", source=TABLE).variables
    assert variable.rule is not None and variable.rule.text == "pattern: `(x|y)`"
    assert variable.description == "d | e"


def test_a_table_without_the_rule_column_has_no_rules() -> None:
    text = "| Variable | Required | Secret | Description |\n|---|---|---|---|\n| `A` | yes | no | d |\n"
    schema = parse_env_schema(text, source=TABLE)
    assert schema.variables[0].rule is None
    assert schema.check({"A": "anything"}, environment="dev") == []


def test_check_skips_unset_and_empty_required_but_checks_a_set_empty_optional() -> None:
    text = HEADER + "| `REQ` | yes | no | one of: a | d |\n| `OPT` | no | no | one of: a | d |\n"
    schema = parse_env_schema(text, source=TABLE)
    assert schema.check({}, environment="dev") == []
    assert schema.check({"REQ": ""}, environment="dev") == []  # missing: reported by read(), not twice
    [problem] = schema.check({"REQ": "a", "OPT": ""}, environment="dev")
    assert problem.format() == (
        f"{TABLE}:4:21: OPT: the value '' breaks the rule 'one of: a': must be one of: a; nothing was sent"
    )


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (SECRET + "\n", "a control character (U+000A) at character 31 (the value ends with a line break"),
        (SECRET + "\r\n", "a control character (U+000D) at character 31 (the value ends with a line break"),
        ("tab\there-" + SECRET, "a control character (U+0009) at character 4, which"),
        ("\x1b[2J" + SECRET, "a control character (U+001B) at character 1, which"),
        (SECRET + "\x85", "a control character (U+0085) at character 31, which"),
        (SECRET + "\udcff", "a lone surrogate (U+DCFF) at character 31, which"),  # a byte that is not UTF-8
    ],
)
def test_a_value_the_agent_refuses_is_named_by_its_code_point_whatever_its_rule(value: str, named: str) -> None:
    """The agent refuses such a value with 422 (counted as a refusal); here it stops the command before sending.
    `any` and a table without rules let everything through: this holds anyway, and never shows a secret."""
    text = HEADER + "| `TOKEN` | yes | yes | any | d |\n| `PUBLIC` | no | no | any | d |\n"
    schema = parse_env_schema(text, source=TABLE)
    [problem] = schema.check({"TOKEN": value}, environment="dev")
    assert (problem.line, problem.col, problem.field) == (3, 1, "TOKEN")
    assert problem.message.startswith(f"the value (secret, not shown) contains {named}"), problem.message
    assert problem.message.endswith("which the agent refuses: remove it; nothing was sent")
    assert SECRET not in problem.format()
    [public] = schema.check({"TOKEN": SECRET, "PUBLIC": "a\x1bb"}, environment="dev")
    assert public.message.startswith("the value 'a\\x1bb' contains a control character (U+001B) at character 2")
    plain = parse_env_schema(
        "| Variable | Required | Secret | Description |\n|---|---|---|---|\n| `A` | yes | no | d |\n", source=TABLE
    )
    assert [p.field for p in plain.check({"A": "x\n"}, environment="dev")] == ["A"]


def test_a_value_with_a_control_character_and_a_broken_rule_is_one_problem() -> None:
    schema = parse_env_schema(HEADER + "| `LEVEL` | yes | no | one of: info | d |\n", source=TABLE)
    [problem] = schema.check({"LEVEL": "info\n"}, environment="dev")
    assert "U+000A" in problem.message and "breaks the rule" not in problem.message


# -- the CLI: every broken rule before anything is sent

DRY_RUN = ("dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")
APPLY = (
    "apply",
    "plans/runtime.yaml",
    "--env",
    "dev",
    "--tag",
    "1.0.3",
    "--repository",
    "acme/trader",
    # Nothing listens on port 9: a request that was sent would exit 3, not 2.
    "--agent",
    "http://127.0.0.1:9",
)
GOOD = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": SECRET}


@pytest.mark.parametrize("command", [DRY_RUN, APPLY], ids=["dry-run", "apply"])
def test_every_broken_rule_is_named_before_anything_is_sent(cli: Cli, workspace: Path, command: tuple[str]) -> None:
    env = {**GOOD, "RUNTIME_ENV": "prod", "RUNTIME_LOG_LEVEL": "loud", "RUNTIME_API_TOKEN": SECRET[:9]}
    result = cli.run(*command, cwd=workspace, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "breaks the rule" in line]
    assert lines == [
        f"{TABLE}:15:30: RUNTIME_ENV: the value 'prod' breaks the rule 'environment': must be 'dev', "
        "the environment being deployed; nothing was sent",
        f"{TABLE}:16:36: RUNTIME_LOG_LEVEL: the value 'loud' breaks the rule 'one of: debug, info, warning, "
        "error': must be one of: debug, info, warning, error; nothing was sent",
        f"{TABLE}:17:37: RUNTIME_API_TOKEN: the value (secret, not shown) breaks the rule 'at least 16 "
        "characters': must be at least 16 characters long; nothing was sent",
    ]
    assert SECRET[:9] not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [DRY_RUN, APPLY], ids=["dry-run", "apply"])
def test_a_pasted_secrets_trailing_newline_stops_the_command_before_anything_is_sent(
    cli: Cli, workspace: Path, command: tuple[str]
) -> None:
    """Sent, it was refused by the agent with 422 (exit 3, counted against the identity's refusals)."""
    result = cli.run(*command, cwd=workspace, env={**GOOD, "RUNTIME_API_TOKEN": SECRET + "\n"})
    assert result.returncode == 2, result.stderr
    assert (
        f"{TABLE}:17:1: RUNTIME_API_TOKEN: the value (secret, not shown) contains a control character (U+000A) at "
        "character 31 (the value ends with a line break: pasted with it?), which the agent refuses: remove it; "
        "nothing was sent"
    ) in result.stderr.splitlines()
    assert "cannot reach the agent" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_rules_hold_together_with_missing_variables(cli: Cli, workspace: Path) -> None:
    result = cli.run(*APPLY, cwd=workspace, env={"RUNTIME_ENV": "prod", "RUNTIME_API_TOKEN": ""})
    assert result.returncode == 2
    assert "required variables not set in the environment: RUNTIME_LOG_LEVEL, RUNTIME_API_TOKEN" in result.stderr
    assert "RUNTIME_ENV: the value 'prod' breaks the rule 'environment'" in result.stderr


def test_an_optional_variable_set_empty_is_checked_and_passes_its_rule(cli: Cli, workspace: Path) -> None:
    result = cli.run(*DRY_RUN, cwd=workspace, env={**GOOD, "RUNTIME_FAULT": ""})
    assert result.returncode == 0, result.stderr
    result = cli.run(*DRY_RUN, cwd=workspace, env={**GOOD, "RUNTIME_FAULT": "crash"})
    assert result.returncode == 2
    assert "RUNTIME_FAULT: the value 'crash' breaks the rule" in result.stderr


def test_in_github_actions_each_broken_rule_is_an_error_and_a_summary_row(
    cli: Cli, workspace: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    env = {
        **GOOD,
        "RUNTIME_ENV": "prod",
        "RUNTIME_API_TOKEN": "short-" + SECRET[:4],
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert errors == [
        "::error::deploy of dev 1.0.3: invalid input: nothing was sent (2 problem(s), each its own error line)",
        f"::error file={TABLE},line=15,col=30::RUNTIME_ENV: the value 'prod' breaks the rule 'environment': "
        "must be 'dev', the environment being deployed; nothing was sent",
        f"::error file={TABLE},line=17,col=37::RUNTIME_API_TOKEN: the value (secret, not shown) breaks the rule "
        "'at least 16 characters': must be at least 16 characters long; nothing was sent",
    ]
    text = summary.read_text()
    assert text.startswith("## deployplan: `dev` `1.0.3` not deployed\n"), text
    assert "| exit code | 2 |" in text
    assert "<pre>" not in text  # the findings are the table's rows, not a second copy of them
    assert "| `RUNTIME_ENV` | `the value 'prod' breaks the rule 'environment'" in text
    assert "| `RUNTIME_API_TOKEN` | `the value (secret, not shown)" in text
    assert SECRET[:4] not in text + result.stderr + result.stdout.replace(f"::add-mask::short-{SECRET[:4]}", "")
    summary.unlink()
    result = cli.run(*DRY_RUN, "--local", cwd=workspace, env=env)
    assert result.returncode == 2
    assert len([line for line in result.stdout.splitlines() if line.startswith("::error")]) == 2
    text = summary.read_text()
    assert text.startswith("## deployplan: dev refused before sending\n"), text
    assert "| `RUNTIME_ENV` | `the value 'prod' breaks the rule 'environment'" in text
    assert SECRET[:4] not in text
