"""The one masker of text from elsewhere, and the byte limits it works within."""

from __future__ import annotations

import pytest

from agent.containerlogs import read_logs
from fakedocker import FakeContainer, FakeDocker
from runner.core.secrets import MASK, Masker

SHORT, LONG = "a" * 10, "b" * 42


@pytest.mark.parametrize(
    ("values", "text", "masked"),
    [
        ([SHORT, "aaaaaaaaaaXYZ"], "token aaaaaaaaaaXYZ", "token ****"),  # the longest first
        (["PEM-line-one\nPEM-line-two"], "x PEM-line-two y", "x **** y"),  # a line of a multi-line value
        (["  indented-secret  "], "[indented-secret]", "[****]"),  # lines are stripped
        (["ab"], "abab", "abab"),  # too short to hide anything
        ([], "nothing to hide", "nothing to hide"),
    ],
)
def test_masking(values: list[str], text: str, masked: str) -> None:
    assert Masker(values).mask(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"x {LONG[:20]}", f"x {MASK}"),  # the end begins a secret: masked
        (f"x {LONG[:2]}", f"x {LONG[:2]}"),  # two characters say nothing
        ("x plain", "x plain"),
    ],
)
def test_a_cut_text_masks_a_secret_it_holds_only_in_part(text: str, masked: str) -> None:
    assert Masker([LONG]).mask(text, cut=True) == masked


def test_a_secret_across_the_cut_of_a_long_line_never_shows_in_part() -> None:
    """Found in review: masking shortened the kept bytes, so a second secret that crossed their end showed through
    the final cut (28 of its 42 characters in the clear)."""
    docker = FakeDocker()
    docker.add(FakeContainer("x", "r:1", output=[("2026-11-30T10:00:00Z", "stdout", SHORT * 12 + LONG + " tail")]))

    tail = read_logs(docker, "id-x", tail=10, masker=Masker([SHORT, LONG]), line_limit=100, total_limit=10_000)

    (line,) = tail.lines
    assert "bbb" not in line.text, line.text
    assert line.text.startswith(MASK * 12) and tail.truncated
