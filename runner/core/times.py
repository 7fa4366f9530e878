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


def seconds(item: Mapping[str, Any], *, start: str = "started_at", end: str = "finished_at") -> float | None:
    """Seconds between two of an item's times (a step's, a deployment's), or None when either is missing."""
    began, ended = parse(item.get(start)), parse(item.get(end))
    return None if began is None or ended is None else (ended - began).total_seconds()


def duration(item: Mapping[str, Any]) -> str:
    """`1.4 s` between an item's started_at and finished_at, or `-`."""
    took = seconds(item)
    return "-" if took is None else f"{took:.1f} s"
