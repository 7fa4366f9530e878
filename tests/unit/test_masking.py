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
    # The run of overlapping SHORTs is one mask, LONG beside it another.
    assert line.text.startswith(MASK + MASK + " [... cut") and tail.truncated


SECRET = "s3cr3t-Value-0123456789"  # 23 characters, as in the review


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"{SECRET[10:]} rest", f"{MASK} rest"),  # the start ends a secret: 13 characters, masked
        (f"{SECRET[-4:]} rest", f"{MASK} rest"),  # 4 characters are a fragment
        (f"{SECRET[-3:]} rest", f"{MASK} rest"),  # 3 too: masking goes as far as a whole value is masked
        (f"{SECRET[-2:]} rest", f"{SECRET[-2:]} rest"),  # two characters say nothing
        (f"{SECRET[5:]}", MASK),  # the whole text is the end of a secret
        (f"x {SECRET[10:]}", f"x {SECRET[10:]}"),  # not at the start: a cut at the start only
        ("plain start", "plain start"),
    ],
)
def test_a_text_cut_at_its_start_masks_the_end_of_a_secret(text: str, masked: str) -> None:
    assert Masker([SECRET]).mask(text, head_cut=True) == masked


@pytest.mark.parametrize(
    ("text", "head", "end", "masked"),
    [
        (f"{SECRET[9:]} mid {SECRET[:9]}", True, True, f"{MASK} mid {MASK}"),  # both ends of one cut
        (f"{SECRET[9:]} mid {SECRET[:9]}", False, False, f"{SECRET[9:]} mid {SECRET[:9]}"),  # not a cut: kept
        (f"{SECRET[:9]}", True, True, MASK),  # a text shorter than the secret, cut at both ends
    ],
)
def test_a_cut_at_both_ends(text: str, head: bool, end: bool, masked: str) -> None:
    assert Masker([SECRET]).mask(text, head_cut=head, cut=end) == masked


@pytest.mark.parametrize(
    ("values", "text", "masked"),
    [
        (["abcdef", "defghi"], "x abcdefghi y", f"x {MASK} y"),  # overlapping secrets: masked as one run
        (["defghi", "abcdef"], "abcdefghi", MASK),  # in any order
        (["abab"], "abababab", MASK),  # a value overlapping itself
        (["abcdef", "ghijkl"], "abcdefghijkl", MASK + MASK),  # side by side: two masks
        (["abcdef"], "abcdef-abcdef", f"{MASK}-{MASK}"),
    ],
)
def test_overlapping_secrets_show_no_part(values: list[str], text: str, masked: str) -> None:
    """Found in review: the longest value was replaced first, and the rest of an overlapping one showed."""
    assert Masker(values).mask(text) == masked


@pytest.mark.parametrize(
    ("line", "tail", "since", "starts_masked"),
    [
        ("x" * 16_374 + SECRET + " end", 1, None, True),  # the tail starts in Docker's second 16 KiB piece
        ("x" * 16_374 + SECRET + " end", 2, None, False),  # both pieces: the line is joined and masked whole
        (SECRET[10:] + " end", 5, None, False),  # the stream from its start: nothing was cut there
        (SECRET[10:] + " end", 5, 1.0, True),  # `since` may fall between two pieces
    ],
    ids=["second-piece", "both-pieces", "from-the-start", "since"],
)
def test_a_tail_that_starts_inside_a_line_masks_the_end_of_a_secret(
    line: str, tail: int, since: float | None, starts_masked: bool
) -> None:
    """Found in review: a tail that began in the second piece of a long line showed 13 of 23 characters."""
    docker = FakeDocker()
    docker.add(FakeContainer("x", "r:1", output=[("2026-11-30T10:00:00Z", "stdout", line)]))

    found = read_logs(
        docker, "id-x", tail=tail, since=since, masker=Masker([SECRET]), line_limit=64_000, total_limit=100_000
    )

    text = "".join(piece.text for piece in found.lines)
    assert SECRET[10:] not in text if starts_masked else SECRET not in text, text
    assert text.startswith(MASK) == starts_masked, text[:40]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://app:p%40ss%20w%2Frd%22%C3%A9@db/app", f"postgres://app:{MASK}@db/app"),  # percent-encoded
        ("form pw=p%40ss+w%2Frd%22%C3%A9&x=1", f"form pw={MASK}&x=1"),  # form-encoded
        ('{"password": "p@ss w/rd\\"\\u00e9"}', f'{{"password": "{MASK}"}}'),  # in a JSON string
        ('{"password": "p@ss w/rd\\"é"}', f'{{"password": "{MASK}"}}'),  # in JSON that keeps Unicode
        ("cEBzcyB3L3JkIsOp", "cEBzcyB3L3JkIsOp"),  # base64 is not masked: docs/masking.md says why
    ],
    ids=["url", "form", "json", "json-unicode", "base64-not-masked"],
)
def test_the_forms_a_runtime_prints_a_secret_in_are_masked(text: str, masked: str) -> None:
    assert Masker(['p@ss w/rd"é']).mask(text) == masked
