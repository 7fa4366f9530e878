"""`logs --follow`: the reads at poll boundaries (equal times, the overlap), replacement, lost contact, Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_reads import runtime, t

from conftest import TOKEN, Api, record_deployment
from conftest import InProcessCli as Cli
from runner.cli import logfollow
from runner.cli.client import ApiFailure
from runner.cli.errors import AgentUnreachable
from runner.cli.logfollow import READ_TAIL, Cursor, follow_logs
from runner.core.times import sortable


def line(time: str, text: str, stream: str = "stdout") -> dict[str, Any]:
    return {"time": time, "stream": stream, "text": text}


def test_times_sort_as_text_whatever_docker_trimmed() -> None:
    stamps = ["2026-11-30T10:00:01Z", "2026-11-30T10:00:01.5Z", "2026-11-30T10:00:01.000000001Z"]
    assert sorted(stamps, key=sortable) == [stamps[0], stamps[2], stamps[1]]


@pytest.mark.parametrize(
    ("reads", "printed"),
    [
        # The second read starts a second earlier: what the first printed is dropped, the rest kept.
        ([[line(t(1), "a"), line(t(2), "b")], [line(t(1), "a"), line(t(2), "b"), line(t(3), "c")]], ["a", "b", "c"]),
        # Two lines of the same time, one printed by each read: neither repeated nor lost.
        ([[line(t(2, "5"), "x")], [line(t(2, "5"), "x"), line(t(2, "5"), "y")]], ["x", "y"]),
        # The same text twice at the same time: the second copy is a line of its own.
        ([[line(t(2), "same")], [line(t(2), "same"), line(t(2), "same")]], ["same", "same"]),
        # The same text at the same time on the other stream is another line.
        ([[line(t(2), "same")], [line(t(2), "same"), line(t(2), "same", "stderr")]], ["same", "same"]),
        # A read that returns nothing new, then one that does.
        ([[line(t(1), "a")], [line(t(1), "a")], [line(t(1), "a"), line(t(1), "b")]], ["a", "b"]),
        # Older lines than the newest printed (the overlap second) are never printed again.
        ([[line(t(5), "e")], [line(t(4), "d"), line(t(5), "e"), line(t(6), "f")]], ["e", "f"]),
    ],
)
def test_poll_boundaries_neither_repeat_nor_lose_a_line(reads: list[list[dict[str, Any]]], printed: list[str]) -> None:
    cursor = Cursor()
    shown = [item["text"] for answer in reads for item in cursor.fresh(answer)]  # type: ignore[arg-type]
    assert shown == printed


def test_the_next_read_starts_a_whole_second_before_the_newest_line() -> None:
    cursor = Cursor()
    assert cursor.since() is None
    cursor.fresh([line("2026-11-30T10:00:00.999999999Z", "a")])  # type: ignore[list-item]
    assert cursor.since() == "2026-11-30T09:59:59Z"


class Scripted:
    """A recording client: each logs() call takes the next answer (an exception is raised)."""

    url = "http://agent.test"

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.calls = answers, []  # type: list[Any], list[tuple[int, str | None]]

    def logs(self, env: str, *, tail: int, since: str | None) -> Any:
        self.calls.append((tail, since))
        if not self.answers:
            raise KeyboardInterrupt
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def answer(container_id: str | None, lines: list[dict[str, Any]], deployment: str | None = "d1") -> dict[str, Any]:
    state = "absent" if container_id is None else "running"
    found = {"environment": "dev", "container": "runtime-dev", "state": state, "lines": lines, "truncated": False}
    if container_id is not None:
        found |= {"container_id": container_id, "deployment_id": deployment}
    return found


def follow(answers: list[Any]) -> tuple[list[str], list[str], Scripted]:
    client, shown, notes = Scripted(answers), [], []  # type: Scripted, list[str], list[str]
    with pytest.raises(KeyboardInterrupt):
        follow_logs(
            client,  # type: ignore[arg-type]
            "dev",
            tail=10,
            since=None,
            show=lambda item: shown.append(item["text"]),
            note=notes.append,
            sleep=lambda _: None,
        )
    return shown, notes, client


def test_a_replaced_runtime_is_named_and_the_new_one_followed_from_its_first_line() -> None:
    shown, notes, client = follow(
        [
            answer("c1", [line(t(1), "old 1")]),
            answer("c1", [line(t(1), "old 1"), line(t(2), "old 2 (stopping)")]),
            answer(None, []),
            answer(None, []),
            answer("c2", [line(t(3), "new 1"), line(t(4), "new 2")], deployment="d2"),
            answer("c2", [line(t(4), "new 2"), line(t(5), "new 3")], deployment="d2"),
        ]
    )
    assert shown == ["old 1", "old 2 (stopping)", "new 1", "new 2", "new 3"]
    assert notes == [
        "runtime-dev: no container now (a deploy may be replacing it); waiting for one",
        "runtime-dev was replaced by deployment d2; following the new container",
        "  (what the old container wrote after 2026-11-30T10:00:02.000000000Z went with it, if anything)",
    ]
    # The first read takes --tail; later ones read from a second before the newest line, as many as there are.
    assert client.calls[:3] == [(10, None), (READ_TAIL, "2026-11-30T10:00:00Z"), (READ_TAIL, "2026-11-30T10:00:01Z")]
    assert client.calls[5] == (READ_TAIL, "2026-11-30T10:00:03Z")


def test_a_runtime_started_while_following_nothing_is_named() -> None:
    shown, notes, _ = follow([answer(None, []), answer("c9", [line(t(1), "hello")], deployment="d7")])
    assert shown == ["hello"]
    assert notes[-1] == "runtime-dev was started by deployment d7; following it"


def test_lost_contact_and_busy_answers_pass_a_refusal_ends_it() -> None:
    busy = ApiFailure(429, "too_many_requests", "slow down", [])
    shown, notes, _ = follow(
        [answer("c1", [line(t(1), "a")]), AgentUnreachable("timed out"), busy, answer("c1", [line(t(2), "b")])]
    )
    assert shown == ["a", "b"]
    assert notes == [
        "lost contact with the agent (timed out); still following",
        "in contact with the agent again; lines written meanwhile follow",
    ]
    with pytest.raises(ApiFailure):
        follow([answer("c1", []), ApiFailure(401, "unauthorized", "no", [])])


def test_more_output_than_a_read_holds_is_noted() -> None:
    flood = [line(t(9), f"n{n}") for n in range(READ_TAIL)]
    _, notes, _ = follow([answer("c1", [line(t(1), "a")]), answer("c1", flood)])
    assert notes == ["more output came between two reads than one read holds: some lines are missing here"]


# -- the command, in-process against the agent's app


@pytest.fixture
def dev_url(make_api: Callable[..., Api], serve: Callable[[Api], str]) -> str:
    from agent.auditlog import AuditLog

    api = make_api(docker=runtime([(t(1), "stdout", "runtime: up"), (t(2), "stderr", "runtime: warn")]))
    record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d1", "dev", "1.0.0", "succeeded")
    return serve(api)


def test_follow_prints_the_log_until_ctrl_c_and_exits_130(
    cli: Cli, tmp_path: Path, dev_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(logfollow, "_sleep", pause)
    result = cli.run("logs", "dev", "-f", cwd=tmp_path, env={"DEPLOY_AGENT_URL": dev_url, "DEPLOY_AGENT_TOKEN": TOKEN})
    assert result.returncode == 130
    # Read three times; each line printed once.
    assert result.stdout.splitlines() == [f"{t(1)} runtime: up", f"{t(2)} [stderr] runtime: warn"]
    assert result.stderr == "stopped following the log of dev\n"
    assert pauses == [logfollow.PAUSE] * 3


def test_follow_of_an_environment_not_served_exits_3(cli: Cli, tmp_path: Path, dev_url: str) -> None:
    result = cli.run(
        "logs", "staging", "--follow", cwd=tmp_path, env={"DEPLOY_AGENT_URL": dev_url, "DEPLOY_AGENT_TOKEN": TOKEN}
    )
    assert result.returncode == 3 and "404 not_found" in result.stderr


def test_a_line_read_again_with_its_start_masked_as_cut_is_not_printed_twice(
    cli: Cli, tmp_path: Path, make_api: Callable[..., Api], serve: Callable[[Api], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent masks the start of the first line of a `since` read as if cut there (a read may begin inside a
    long line). A line that begins with the end of a secret ("value" of "s3cret-api-token-value") comes back
    from the next read as "****=42 accepted": the same line, already printed, not a new one."""
    from agent.auditlog import AuditLog

    api = make_api(docker=runtime([(t(1), "stdout", "value=42 accepted")]))
    record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d1", "dev", "1.0.0", "succeeded")
    reads = []

    def pause(seconds: float) -> None:
        reads.append(seconds)
        if len(reads) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(logfollow, "_sleep", pause)
    env = {"DEPLOY_AGENT_URL": serve(api), "DEPLOY_AGENT_TOKEN": TOKEN}
    result = cli.run("logs", "dev", "--follow", cwd=tmp_path, env=env)
    assert result.returncode == 130
    assert result.stdout.splitlines() == [f"{t(1)} value=42 accepted"]


@pytest.mark.parametrize(
    ("again", "printed"),
    [
        (line(t(2), "****=42 accepted"), ["value=42 accepted"]),  # the same line, its start masked as cut
        (line(t(2), "****=42 accepted", "stderr"), ["value=42 accepted", "****=42 accepted"]),  # another stream
        (line(t(3), "****=42 accepted"), ["value=42 accepted", "****=42 accepted"]),  # a later line
        (line(t(2), "****=43 accepted"), ["value=42 accepted", "****=43 accepted"]),  # another text
    ],
)
def test_only_a_masked_copy_of_a_printed_line_is_dropped(again: dict[str, Any], printed: list[str]) -> None:
    cursor = Cursor()
    reads = [[line(t(2), "value=42 accepted")], [again]]
    assert [item["text"] for answer in reads for item in cursor.fresh(answer)] == printed  # type: ignore[arg-type]
