"""`deployplan audit verify`: check a copy of the audit log's hash chain, and the heads kept off the server."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from runner.cli.console import Console
from runner.cli.errors import Exit, UsageError
from runner.core.chain import ChainBroken, Head, verify_lines


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    try:
        anchors = tuple(Head.parse(text) for text in args.anchor)
    except ValueError as e:
        raise UsageError(f"--anchor {e}") from None
    if not args.path.is_file():
        raise UsageError(f"{args.path}: no such audit log")
    try:
        verified = verify_lines(_lines(args.path), name=str(args.path), anchors=anchors)
    except ChainBroken as e:
        seq = f" (seq {e.seq})" if e.seq is not None else ""
        console.error(f"{args.path}: BROKEN at line {e.line}{seq}: {e.reason}")
        return Exit.FAILED
    except OSError as e:
        console.error(f"{args.path}: cannot read: {e.strerror}")
        return Exit.FAILED
    head = f", head {verified.head}" if verified.head else ""
    checked = f", {len(anchors)} anchor(s) match" if anchors else ""
    console.print(f"{args.path}: intact, {verified.records} records{head}{checked}")
    if verified.torn_bytes:
        console.error(
            f"{args.path}: note: the last {verified.torn_bytes} bytes are a torn line (a crash in the middle of an "
            "append); they are not part of the chain, and the agent sets them aside when it starts"
        )
    return Exit.OK


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f
