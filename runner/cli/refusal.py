"""A deploy that never ran, in GitHub Actions: an `::error::` line and a job summary that say what and why."""

from __future__ import annotations

import argparse

from runner.cli.client import ApiFailure
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, Exit, UsageError
from runner.cli.github import append_summary, command, not_run_markdown
from runner.core.errors import DeployplanError, InvalidInput
from runner.core.secrets import Masker
from runner.core.text import printable


def why(error: DeployplanError) -> tuple[str, int, str]:
    """(what happened, the exit code it gives, the reason in full) for an error that stops a deploy unsent."""
    if isinstance(error, InvalidInput):
        reason = "\n".join(problem.format() for problem in error.problems)
        return "invalid input: nothing was sent", Exit.INVALID, reason
    if isinstance(error, ApiFailure):
        return f"refused by the agent ({error.status} {error.code})", Exit.AGENT, str(error)
    if isinstance(error, AgentRefused):
        return "refused by the agent", Exit.AGENT, str(error)
    if isinstance(error, UsageError):
        return "invalid input: nothing was sent", Exit.INVALID, str(error)
    return "the agent could not be reached", Exit.AGENT, str(error)


def not_run(console: Console, args: argparse.Namespace, error: DeployplanError, masker: Masker) -> None:
    """Write the `::error::` line and the job summary of a deploy that did not run (exit 2 or 3)."""
    result, code, reason = why(error)
    reason = "\n".join(printable(line) for line in masker.mask(reason).splitlines())
    environment, tag = masker.mask(str(args.env)), masker.mask(str(args.tag))
    console.print(command("error", f"deploy of {environment} {tag}: {result}: {reason}"))
    summary = not_run_markdown(environment=environment, tag=tag, result=result, code=code, reason=reason)
    try:
        append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), summary)
    except OSError as e:  # the reason the deploy did not run matters more than its summary
        console.error(f"cannot write the job summary ({e.strerror}); the error above says why nothing ran")
