"""`deployplan status`, `history` and `logs`: what the agent knows, read without touching anything."""

from __future__ import annotations

import argparse
import json

from runner.cli.client import connect
from runner.cli.console import Console
from runner.cli.errors import Exit
from runner.cli.report import status_table


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    status = connect(args.agent, console.environ).status(args.env)
    if args.json:
        console.print(json.dumps(status, indent=2))
    else:
        for line in status_table(status):
            console.print(line)
    return Exit.OK
