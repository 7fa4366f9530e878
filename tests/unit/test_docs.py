"""The docs and the command table are derived from the code, not written twice: checked here."""

from __future__ import annotations

from pathlib import Path

import stepdocs

from runner.cli.main import COMMANDS
from runner.cli.options import _HELP, _OPTIONS

REPO = Path(__file__).resolve().parents[2]


def test_the_steps_in_the_agent_docs_are_the_step_tables_output() -> None:
    text = (REPO / "docs" / "agent.md").read_text("utf-8")
    block = text.split("<!-- steps:begin -->\n", 1)[1].split("\n<!-- steps:end -->", 1)[0]
    assert block == stepdocs.markdown(), "run `python3 tools/stepdocs.py` and paste its output into docs/agent.md"


def test_every_command_has_options_help_and_a_function() -> None:
    assert list(COMMANDS) == list(_OPTIONS) == list(_HELP)
