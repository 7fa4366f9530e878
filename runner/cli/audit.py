"""`deployplan audit verify` and `audit pull`: a copy of the audit log kept off the server, checked against its
hash chain, the heads kept from deploys, and the heads the agent's history gives."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from runner.cli.console import Console
from runner.cli.errors import Exit, UsageError
from runner.core.chain import ChainBroken, Head, verify_lines


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    if args.audit_command == "pull":
        return _pull(args, console)
    try:
        anchors = [Head.parse(text) for text in args.anchor]
    except ValueError as e:
        raise UsageError(f"--anchor {e}") from None
    if not args.path.is_file():
        raise UsageError(f"{args.path}: no such audit log")
    if args.agent:
        conflict = _take_history(args, console, anchors)
        if conflict:
            console.error(f"{args.path}: BROKEN: {conflict}")
            return Exit.FAILED
    try:
        verified = verify_lines(_lines(args.path), name=str(args.path), anchors=anchors)
    except ChainBroken as e:
        seq = f" (seq {e.seq})" if e.seq is not None else ""
        console.error(
            f"{args.path}: {console.style('BROKEN', 'red', 'bold', err=True)} at line {e.line}{seq}: {e.reason}"
        )
        return Exit.FAILED
    except OSError as e:
        console.error(f"{args.path}: cannot read: {e.strerror}")
        return Exit.FAILED
    head = f", head {verified.head}" if verified.head else ""
    checked = f", {len(anchors)} anchor(s) match" if anchors else ""
    console.print(
        console.style(f"{args.path}: intact", "green", "bold") + f", {verified.records} records{head}{checked}"
    )
    if verified.torn_bytes:
        console.error(
            f"{args.path}: note: the last {verified.torn_bytes} bytes are a torn line (a crash in the middle of an "
            "append); they are not part of the chain, and the agent sets them aside when it starts"
        )
    return Exit.OK


def _take_history(args: argparse.Namespace, console: Console, anchors: list[Head]) -> str | None:
    """Add the audit heads of the agent's history to `anchors`, those the copy reaches; None, or why a head of
    the agent contradicts an --anchor given for the same record."""
    from runner.cli.auditcopy import history_anchors, tail_of
    from runner.cli.client import connect
    from runner.core.chain import parse

    last, _ = tail_of(args.path)
    try:
        end = parse(last.decode("utf-8"))["seq"] if last is not None else 0
    except (ValueError, TypeError, KeyError):
        end = 0  # the chain check names what is wrong with that line
    given = {anchor.seq: anchor for anchor in anchors}
    heads = history_anchors(connect(args.agent, console.environ))
    for head in heads:
        if head.seq in given and given[head.seq] != head:
            return f"the agent's audit head {head} contradicts --anchor {given[head.seq]}"
    reached = [h for h in heads if h.seq <= end and h.seq not in given]
    anchors.extend(dict.fromkeys(reached))
    later = len({h.seq for h in heads if h.seq > end})
    console.error(f"{args.path}: {len(set(reached))} audit head(s) from the agent's history as anchors")
    if later:
        console.error(
            f"{args.path}: {later} newer audit head(s) lie beyond the copy's last record ({end}): "
            "`deployplan audit pull` first to check them too"
        )
    return None


def _pull(args: argparse.Namespace, console: Console) -> int:
    from runner.cli.auditcopy import CopyRefused, pull
    from runner.cli.client import connect

    client = connect(args.agent, console.environ)
    try:
        pulled = pull(client, args.output)
    except CopyRefused as e:
        console.error(f"{console.style('refused:', 'red', 'bold', err=True)} {e}")
        return Exit.FAILED
    except OSError as e:
        console.error(f"{args.output}: cannot write the copy: {e.strerror}")
        return Exit.FAILED
    if pulled.torn_bytes:
        console.error(
            f"{args.output}: dropped a torn last line of {pulled.torn_bytes} bytes (a pull cut short; "
            "its record is pulled again)"
        )
    head = f", ends at {pulled.head}" if pulled.head else " (the agent's log is empty)"
    console.print(f"{args.output}: {pulled.added} new record(s) from {client.url}{head}")
    return Exit.OK


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f
