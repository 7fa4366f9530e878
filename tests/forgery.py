"""A forger of audit log copies for the tests: records rewritten and their chain recomputed, so that the copy alone
still verifies and only the agent (or an anchor kept elsewhere) can tell."""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from runner.core.chain import canonical


def rechained(records: list[dict[str, Any]], *, prev: str) -> bytes:
    """The records as audit log lines, each one's `prev` and `hash` recomputed from `prev` on."""
    lines = []
    for record in records:
        record = {k: v for k, v in record.items() if k != "hash"} | {"prev": prev}
        prev = record["hash"] = sha256(canonical(record)).hexdigest()
        lines.append(canonical(record) + b"\n")
    return b"".join(lines)
