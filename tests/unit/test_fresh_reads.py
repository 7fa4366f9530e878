"""Shared Docker reads: concurrent callers share one round trip, but never one that started before they arrived."""

from __future__ import annotations

import threading
import time

import pytest

from agent.dockerio import FreshReads


def test_callers_arriving_during_a_read_share_the_next_one_not_that_one() -> None:
    fresh, reads, gate = FreshReads(), [], threading.Event()

    def read() -> int:
        reads.append(len(reads) + 1)
        if len(reads) == 1:
            gate.wait(5)  # the first read is in flight while the others arrive
        return len(reads)

    results: dict[str, int] = {}

    def call(name: str) -> None:
        results[name] = fresh.get(read)

    first = threading.Thread(target=call, args=("first",))
    first.start()
    while not reads:
        time.sleep(0.001)
    late = [threading.Thread(target=call, args=(f"late{i}",)) for i in range(5)]
    for thread in late:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in (first, *late):
        thread.join(5)

    assert results["first"] == 1
    assert {results[f"late{i}"] for i in range(5)} == {2}  # they arrived during read 1: they all got read 2
    assert reads == [1, 2]  # six callers, two round trips


def test_a_caller_alone_reads_each_time() -> None:
    fresh, count = FreshReads(), iter(range(1, 100))
    assert [fresh.get(lambda: next(count)) for _ in range(3)] == [1, 2, 3]


def test_a_failed_read_raises_for_everyone_who_shared_it_and_the_next_read_starts_afresh() -> None:
    fresh = FreshReads()

    def broken() -> int:
        raise OSError("docker gone")

    with pytest.raises(OSError, match="docker gone"):
        fresh.get(broken)
    assert fresh.get(lambda: 7) == 7
