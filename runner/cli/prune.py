"""`deployplan prune`: what old runtime images would go and why the others stay; removed only with --yes."""

from __future__ import annotations

import argparse
from typing import Any

from runner.cli.client import connect
from runner.cli.console import Console
from runner.cli.errors import Exit
from runner.core.text import printable


def cmd_prune(args: argparse.Namespace, console: Console) -> int:
    answer = connect(args.agent, console.environ).post("/v1/prune", {"keep": args.keep, "dry_run": not args.yes})
    for line in prune_report(answer):
        console.print(line)
    for error in answer.get("errors", []):
        console.error(f"not removed: {printable(str(error.get('image')))}: {printable(str(error.get('message')))}")
    return Exit.OK


def prune_report(answer: dict[str, Any]) -> list[str]:
    """What stays and why, what goes (or went), and how much disk that frees."""
    lines = [f"keep {printable(str(k['image']))}: {printable(str(k['reason']))}" for k in answer.get("kept", [])]
    dry_run = answer.get("dry_run", True)
    listed = answer.get("remove", []) if dry_run else answer.get("removed", [])
    verb = "would remove" if dry_run else "removed"
    for item in listed:
        note = f" ({item['note']})" if item.get("note") else ""
        lines.append(f"{verb} {printable(str(item['image']))} {_size(int(item.get('size') or 0))}{note}")
    if not listed:
        lines.append("nothing to remove")
    total = _size(int(answer.get("bytes") or 0))
    if dry_run:
        lines.append(f"{total} would be freed; nothing was touched (run again with --yes to remove)")
    else:
        lines.append(f"{total} freed")
    return lines


def _size(size: int) -> str:
    units = ("bytes", "KiB", "MiB", "GiB")
    scale = 0
    while size >= 1024 ** (scale + 1) and scale < len(units) - 1:
        scale += 1
    return f"{size} bytes" if scale == 0 else f"{size / 1024**scale:.1f} {units[scale]}"
