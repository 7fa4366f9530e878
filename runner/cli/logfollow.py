"""`deployplan logs ENV --follow`: the runtime's output as it is written, across a deploy that replaces it.

It polls: a short `GET /v1/logs/<env>?since=...` every PAUSE seconds. Each read is answered at once, so no
request comes near Cloudflare's 100 s response limit and none holds one of the agent's request threads while it
waits (the threads long polls may hold are few, and kept for following deploys). Docker's `since` includes its
own second, and the agent's is a float: each read asks from one whole second before the newest line printed and
drops what was printed already, lines of equal time counted, so that a poll boundary neither repeats nor loses
a line.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

from runner.cli.client import AgentClient, ApiFailure
from runner.cli.errors import AgentUnreachable
from runner.core.secrets import MASK
from runner.core.shapes import LogLineDict, LogsDict
from runner.core.times import sortable

PAUSE = 1.0
# A read between two polls asks for as many lines as the agent gives; more than that in one PAUSE is noted.
READ_TAIL = 5000
# Refusals that pass: the agent is busy (429) or Docker is away for a moment (503); following goes on.
PASSING = (429, 503)


@dataclass
class Cursor:
    """Where a follower is in one container's output: the newest time printed and the lines printed at it."""

    container_id: str | None = None
    newest: str = ""
    at_newest: Counter[tuple[str, str]] = field(default_factory=Counter)

    def since(self) -> str | None:
        """`since` for the next read: one whole second before the newest line printed (None: from the start)."""
        if not self.newest:
            return None
        second = datetime.fromisoformat(self.newest[:19] + "+00:00") - timedelta(seconds=1)
        return second.strftime("%Y-%m-%dT%H:%M:%SZ")

    def fresh(self, lines: Iterable[LogLineDict]) -> list[LogLineDict]:
        """The lines of an answer not printed yet, in order; they count as printed from now on."""
        new: list[LogLineDict] = []
        here: Counter[tuple[str, str]] = Counter()  # each line at `newest` in this answer, by stream and text
        streams: set[str] = set()
        for line in lines:
            key, ident = sortable(line.get("time")), (str(line.get("stream")), str(line.get("text")))
            first_of_stream = ident[0] not in streams
            streams.add(ident[0])
            if key < self.newest:
                continue
            if key > self.newest:
                self.newest, self.at_newest, here = key, Counter(), Counter()
            elif first_of_stream and self._printed_with_its_start_masked(ident):
                continue
            here[ident] += 1
            if here[ident] <= self.at_newest[ident]:
                continue  # the same line at the same time, printed by an earlier read
            self.at_newest[ident] += 1
            new.append(line)
        return new

    def _printed_with_its_start_masked(self, ident: tuple[str, str]) -> bool:
        """Whether a stream's first line of a `since` read is a line printed already at this time, read again
        with its start masked: the agent masks that start as cut (a read may begin inside a long line), so a
        line that begins with the end of a secret comes back as `****` and the rest of it."""
        stream, text = ident
        if ident in self.at_newest or not text.startswith(MASK):
            return False
        rest = text[len(MASK) :]
        return any(s == stream and printed.endswith(rest) and printed != text for s, printed in self.at_newest)

    def gap(self, answer: LogsDict, before: str) -> bool:
        """Whether lines may be missing between the last read and this one: the overlap with it is gone, cut
        by the line count or the agent's byte limit."""
        lines = answer.get("lines", [])
        if not (before and lines and sortable(lines[0].get("time")) > before):
            return False  # the overlap with the last read is there: nothing between them is missing
        return len(lines) >= READ_TAIL or bool(answer.get("truncated"))


def follow_logs(
    client: AgentClient,
    env: str,
    *,
    tail: int,
    since: str | None,
    show: Callable[[LogLineDict], None],
    note: Callable[[str], None],
    pause: float = PAUSE,
    sleep: Callable[[float], None] | None = None,
) -> NoReturn:
    """Print the environment's output until interrupted (KeyboardInterrupt) or refused (ApiFailure); `show` a
    line, `note` what the operator should know (replaced, gone, contact lost)."""
    cursor, first, lost, gone = Cursor(), True, False, False
    sleep = sleep or _sleep
    while True:
        try:
            answer = client.logs(env, tail=tail if first else READ_TAIL, since=since if first else cursor.since())
        except (ApiFailure, AgentUnreachable) as e:
            if isinstance(e, ApiFailure) and e.status not in PASSING:
                raise
            if not lost:
                note(f"lost contact with the agent ({e}); still following")
            lost = True
            sleep(pause)
            continue
        if lost:
            note("in contact with the agent again; lines written meanwhile follow")
            lost = False
        name, container = answer.get("container"), answer.get("container_id")
        if answer.get("state") == "absent" or container is None:
            if not gone:
                note(f"{name}: no container now (a deploy may be replacing it); waiting for one")
            gone = True
        else:
            if container != cursor.container_id:
                if not first:
                    note(_replaced(str(name), answer, had_one=cursor.container_id is not None))
                if cursor.container_id is not None and cursor.newest:
                    # Polling sees a container only while it exists: what the old one wrote after the last read
                    # (its shutdown, at most a PAUSE of it) was removed with it.
                    note(f"  (what the old container wrote after {cursor.newest} went with it, if anything)")
                # Read from the old container's time, this answer holds only the new one's lines: all of them new.
                cursor = Cursor(container_id=container)
            gone = False
            before = cursor.newest
            for line in cursor.fresh(answer.get("lines", [])):
                show(line)
            if not first and cursor.gap(answer, before):
                note("more output came between two reads than one read holds: some lines are missing here")
        first = False
        sleep(pause)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _replaced(name: str, answer: LogsDict, *, had_one: bool) -> str:
    by = answer.get("deployment_id")
    who = f"deployment {by}" if by else f"container {str(answer.get('container_id'))[:12]} (no deployment label)"
    if had_one:
        return f"{name} was replaced by {who}; following the new container"
    return f"{name} was started by {who}; following it"
