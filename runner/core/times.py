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


def duration(item: Mapping[str, Any]) -> str:
    """`1.4 s` between an item's started_at and finished_at, or `-`."""
    start, end = parse(item.get("started_at")), parse(item.get("finished_at"))
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"
