"""What is derived or shipped, checked once here: the steps in the docs, the command table, the schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stepdocs
from jsonschema import Draft202012Validator

from runner.cli.main import COMMANDS
from runner.cli.options import _HELP, _OPTIONS

REPO = Path(__file__).resolve().parents[2]


def test_the_steps_in_the_agent_docs_are_the_step_tables_output() -> None:
    text = (REPO / "docs" / "agent.md").read_text("utf-8")
    block = text.split("<!-- steps:begin -->\n", 1)[1].split("\n<!-- steps:end -->", 1)[0]
    assert block == stepdocs.markdown(), "run `python3 tools/stepdocs.py` and paste its output into docs/agent.md"


def test_every_command_has_options_help_and_a_function() -> None:
    assert list(COMMANDS) == list(_OPTIONS) == list(_HELP)


@pytest.mark.parametrize("name", ["plan.schema.json", "deploy-request.schema.json"])
def test_the_shipped_schemas_are_valid_2020_12_schemas(name: str) -> None:
    """Checked here, once, rather than at every start of the CLI and the agent."""
    Draft202012Validator.check_schema(json.loads((REPO / "schemas" / name).read_text("utf-8")))


def test_no_two_test_modules_share_a_name() -> None:
    """pytest imports each test module by its basename (no packages here): two tiers with the same file name stop
    the whole run at collection."""
    names = sorted(p.name for p in (REPO / "tests").rglob("test_*.py"))
    assert [n for n in set(names) if names.count(n) > 1] == []
