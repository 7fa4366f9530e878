"""A container's recent output as the agent shows it: stdout and stderr in order, masked, bounded in bytes."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import docker

from runner.core.secrets import Masker
from runner.core.text import clip_line
from runner.core.times import sortable


@dataclass
class LogLine:
    time: str | None
    stream: Literal["stdout", "stderr"]
    text: str


@dataclass
class LogTail:
    """A container's recent output, masked and bounded; `truncated` when a line or older lines were cut."""

    lines: list[LogLine] = field(default_factory=list)
    truncated: bool = False


def read_logs(
    client: docker.APIClient,
    container: str,
    *,
    tail: int,
    masker: Masker,
    line_limit: int,
    total_limit: int,
    since: float | None = None,
) -> LogTail:
    """The container's last `tail` lines, stdout and stderr in order, each masked, then cut to `line_limit` bytes,
    the newest kept within `total_limit` bytes.

    Docker stores a long line as 16 KiB pieces, each its own message with a timestamp; the pieces are joined
    here, keeping only what can be shown (plus room to mask a secret that crosses the cut). Memory stays about
    `total_limit` whatever the runtime wrote. Docker counts `tail` in pieces, and `since` may fall between two
    pieces, so the first line of a stream may begin inside a line: its start is masked as a cut (the end of a
    secret there is hidden too).
    """
    keep = line_limit + masker.longest
    pieces: dict[str, int] = {"stdout": 0, "stderr": 0}
    streams = [
        _lines(
            client.logs(
                container,
                stdout=name == "stdout",
                stderr=name == "stderr",
                stream=True,
                follow=False,
                timestamps=True,
                tail=tail,
                since=since,
            ),
            name,
            keep,
            pieces,
        )
        for name in ("stdout", "stderr")
    ]
    result = LogTail()
    kept: deque[LogLine] = deque()
    first: dict[str, LogLine] = {}
    size = 0
    for time_, stream, raw, whole in heapq.merge(*streams, key=lambda item: sortable(item[0])):
        # What was kept of a long line may end inside a secret: mask that end too, then cut to the limit.
        masked = masker.mask(raw.decode("utf-8", "replace"), cut=whole > len(raw))
        text = clip_line(masked, line_limit, size=whole if whole > len(raw) else None)
        result.truncated |= text != masked
        kept.append(LogLine(time=time_, stream=stream, text=text))
        first.setdefault(stream, kept[-1])
        size += len(text.encode("utf-8", "surrogatepass")) + 1
        while size > total_limit or len(kept) > tail:
            size -= len(kept.popleft().text.encode("utf-8", "surrogatepass")) + 1
            result.truncated = True
    for name, line in first.items():
        # Fewer pieces than asked for, without `since`: Docker gave the stream from its very start.
        if since is not None or pieces[name] >= tail:
            line.text = masker.mask(line.text, head_cut=True)
    result.lines = list(kept)
    return result


def _lines(
    frames: Iterable[bytes], stream: Literal["stdout", "stderr"], keep: int, pieces: dict[str, int]
) -> Iterator[tuple[str | None, Literal["stdout", "stderr"], bytes, int]]:
    """(time, stream, the first `keep` bytes of the line, the line's whole size) for each line of one stream;
    `pieces[stream]` counts Docker's messages."""
    time_: str | None = None
    buffer = bytearray()
    size = 0
    for frame in frames:
        pieces[stream] += 1
        stamp, _, message = frame.partition(b" ")
        if time_ is None:
            time_ = stamp.decode("ascii", "replace")
        body = message[:-1] if message.endswith(b"\n") else message
        buffer += body[: max(keep - len(buffer), 0)]
        size += len(body)
        if message.endswith(b"\n"):
            yield time_, stream, bytes(buffer), size
            time_, buffer, size = None, bytearray(), 0
    if buffer or time_ is not None:
        yield time_, stream, bytes(buffer), size
