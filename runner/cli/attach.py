"""`deployplan follow ID`: re-attach to a running or finished deployment and see it through as `apply` would."""

from __future__ import annotations

import argparse

from runner.cli.client import connect
from runner.cli.console import Console
from runner.cli.follow import Target, longest_deadline
from runner.cli.watch import new_printer, watch
from runner.core.secrets import Masker
from runner.core.text import printable


def cmd_follow(args: argparse.Namespace, console: Console) -> int:
    client = connect(args.agent, console.environ)
    # A plain read first: an unknown id is a refusal (404, exit 3) before anything is printed, and the steps
    # already done show at once, not after the first long poll.
    deployment = client.deployment(args.deployment_id)
    target = Target(
        environment=str(deployment.get("environment")),
        tag=str(deployment.get("tag")),
        image=str(deployment.get("image")),
    )
    state = str(deployment.get("state"))
    console.print(
        printable(
            f"following deployment {deployment.get('id')}: {target.image} to {target.environment} "
            f"(by {deployment.get('actor')}, {state}) through {client.url}"
        )
    )
    # The agent masks what it sends; no secret value is known here to mask again.
    masker = Masker(())
    printer = new_printer(console, masker)
    printer.steps(deployment)
    seq = (deployment.get("audit_head") or {}).get("seq")
    return watch(
        console,
        client,
        args.deployment_id,
        target=target,
        masker=masker,
        seconds=longest_deadline(),
        printer=printer,
        after=seq if isinstance(seq, int) else None,
    )
