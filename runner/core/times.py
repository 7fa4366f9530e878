"""Times as the agent reports them (UTC ISO 8601) and durations as the CLI prints them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def sortable(stamp: str | None) -> str:
    """Docker's RFC 3339 time (nanoseconds, trailing zeros trimmed) padded so that text order is time order."""
    if not stamp:
        return ""
    head, dot, rest = stamp.partition(".")
    if not dot:
        return head.rstrip("Z") + ".000000000Z"
    return f"{head}.{rest.rstrip('Z').ljust(9, '0')}Z"


# `since` (of /v1/logs): at most this many seconds back.
MAX_SINCE_SECONDS = 10 * 365 * 86400


def since_timestamp(raw: str, *, now: float) -> float | None:
    """`since` as the agent takes it, a number of seconds back or an RFC 3339 time with its offset: the Unix time
    it names, or None when it is neither (the agent answers 400, the CLI refuses it first)."""
    if raw.isascii() and raw.isdigit():
        return now - int(raw) if 0 < int(raw) <= MAX_SINCE_SECONDS else None
    when = parse(raw)
    if when is None or when.tzinfo is None or when.timestamp() <= 0:
        return None
    return when.timestamp()


def seconds(item: Mapping[str, Any], *, start: str = "started_at", end: str = "finished_at") -> float | None:
    """Seconds between two of an item's times (a step's, a deployment's), or None when either is missing."""
    began, ended = parse(item.get(start)), parse(item.get(end))
    return None if began is None or ended is None else (ended - began).total_seconds()


def duration(item: Mapping[str, Any]) -> str:
    """`1.4 s` between an item's started_at and finished_at, or `-`."""
    took = seconds(item)
    return "-" if took is None else f"{took:.1f} s"
