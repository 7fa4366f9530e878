"""A copy of the agent's audit log kept off the server: pulled through `/v1/audit` pages, appended to whole lines
at a time, and checked against the agent's own record of where the copy ends before anything is appended."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.cli.client import AgentClient
from runner.cli.errors import AgentUnreachable
from runner.core.chain import ChainBroken, ChainVerifier, Head, canonical, verify_lines
from runner.core.errors import DeployplanError

CHUNK = 64 * 1024
FULL_PAGE = 1000


class CopyRefused(DeployplanError):
    """The copy does not continue the agent's log (or is broken itself): nothing is appended."""


@dataclass(frozen=True)
class Pulled:
    """What a pull did: the records added, where the copy ends now, the bytes of a torn tail it set aside."""

    added: int
    head: Head | None
    torn_bytes: int


def tail_of(path: Path) -> tuple[bytes | None, int]:
    """The last complete line of a file (None when it has none) and the size of its complete lines: a torn
    last line (an append cut short) lies beyond that size."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        end, position, data = None, size, b""
        while position > 0:
            position = max(0, position - CHUNK)
            f.seek(position)
            data = f.read(size - position)
            newlines = [i for i, byte in enumerate(data) if byte == 0x0A]
            if end is None and newlines:
                end = position + newlines[-1] + 1
            if end is not None and (len(newlines) >= 2 or position == 0):
                start = position + newlines[-2] + 1 if len(newlines) >= 2 else 0
                return data[start - position : end - position], end
    return None, 0


def pull(client: AgentClient, path: Path) -> Pulled:
    """Bring the copy at `path` up to the agent's log (a new file when there is none). The whole copy is checked
    first; its last record must equal the agent's record of the same seq. Each page is appended whole, then
    synced: an interrupted pull leaves whole records, or at worst a torn last line that the next pull sets aside."""
    verifier = ChainVerifier(name=str(path))
    torn, first = 0, None
    if path.exists():
        with path.open("rb") as f:
            try:
                verified = verify_lines(f, name=str(path))
            except ChainBroken as e:
                raise CopyRefused(f"the copy is broken: {e}; nothing was appended") from e
        torn = verified.torn_bytes
        if verified.head is not None:
            first = _same_as_agent(client, path, verified.head)
            verifier.last_seq, verifier.last_hash = verified.head.seq, verified.head.hash
    added = 0
    with path.open("ab") as out:
        if torn:
            out.truncate(path.stat().st_size - torn)  # our own append, cut short: never part of the chain
        for page in _pages(client, after=verifier.last_seq, first=first):
            lines = []
            for record in page:
                try:
                    lines.append(canonical(verifier.check(verifier.last_seq + 1, record)) + b"\n")
                except ChainBroken as e:
                    raise CopyRefused(f"the agent's records do not chain: {e}; nothing more was appended") from e
            out.write(b"".join(lines))
            out.flush()
            os.fsync(out.fileno())
            added += len(lines)
    head = Head(verifier.last_seq, verifier.last_hash) if verifier.last_seq else None
    return Pulled(added=added, head=head, torn_bytes=torn)


def _same_as_agent(client: AgentClient, path: Path, mine: Head) -> dict[str, Any]:
    """The agent's page from the copy's last record on, once that record is the agent's own (same seq, same
    hash: the hash covers the whole record and the chain before it)."""
    answer = client.get("/v1/audit", after=mine.seq - 1)
    records = answer.get("records") or []
    theirs = records[0] if records and isinstance(records[0], dict) else None
    if theirs is None or theirs.get("seq") != mine.seq:
        raise CopyRefused(
            f"{path}: the copy ends at record {mine.seq}, but the agent has no record {mine.seq}: its log is shorter "
            "than this copy, so records were removed there; nothing was appended (keep this copy as evidence)"
        )
    if theirs.get("hash") != mine.hash:
        raise CopyRefused(
            f"{path}: record {mine.seq}, the copy's last, no longer matches the agent's record {mine.seq} (hash "
            f"{mine.hash} here, {theirs.get('hash')} at the agent): one of the two logs was changed; "
            "nothing was appended (keep this copy as evidence, and pull into a new file to compare)"
        )
    return answer


def _pages(client: AgentClient, *, after: int, first: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
    """The agent's records after `after`, a page at a time, until it says there are no more; `first` is a page
    asked for already (it may begin at or before `after`: those records are the copy's)."""
    answer = first
    while True:
        answer = answer if answer is not None else client.get("/v1/audit", after=after)
        records = answer.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise AgentUnreachable(f"the agent at {client.url} answered /v1/audit without a list of records")
        fresh = [r for r in records if not isinstance(r.get("seq"), int) or r["seq"] > after]
        if fresh:
            yield fresh
            after = fresh[-1].get("seq", after)
        more = answer.get("more")
        if more is None:  # an agent that does not say: a full page (SPEC: at most 1000) may have more behind it
            more = len(records) >= FULL_PAGE
        if not more or not records:
            return
        answer = None


def history_anchors(client: AgentClient) -> list[Head]:
    """Every `audit_head` of the agent's last 200 deployments, as anchors."""
    anchors = []
    for deployment in client.history(None, 200):
        head = deployment.get("audit_head")
        if head is None:
            continue
        try:
            anchors.append(Head.parse(f"{head['seq']}:{head['hash']}"))
        except (TypeError, KeyError, ValueError) as e:
            raise AgentUnreachable(f"the agent at {client.url} sent an audit_head that is not SEQ:HASH") from e
    return anchors
