"""A deploy that never ran, in GitHub Actions: an `::error::` line and a job summary that say what and why."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from runner.cli.client import ApiFailure
from runner.cli.console import Console
from runner.cli.errors import AgentRefused, DeployFailed, Exit, UsageError
from runner.cli.github import append_summary, command, not_run_markdown
from runner.cli.oidc import TokenUnavailable
from runner.core.errors import DeployplanError, InvalidInput
from runner.core.problems import Problem
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
    if isinstance(error, TokenUnavailable):  # an AgentUnreachable by its exit code only: the agent was never asked
        return "GitHub did not give the job its OIDC token: nothing was sent", Exit.AGENT, str(error)
    return "the agent could not be reached", Exit.AGENT, str(error)


def not_run(console: Console, args: argparse.Namespace, error: DeployplanError, masker: Masker) -> None:
    """Write the `::error::` line and the job summary of a deploy that did not run (exit 2 or 3).

    Invalid input has an `::error` line per finding too, at its file and line (the one exit point prints them):
    the line here names the deploy and leaves the findings to those, and the summary has a row per finding."""
    result, code, reason = why(error)
    problems = error.problems if isinstance(error, InvalidInput) else None
    _report(
        console,
        masker,
        environment=str(args.env),
        tag=str(args.tag),
        result=result,
        code=code,
        reason=reason,
        problems=problems,
    )


def not_followed(console: Console, environment: str, tag: str, error: DeployFailed, masker: Masker) -> None:
    """The same for a deploy that was accepted but could not be followed to its end (exit 1): outcome unknown."""
    result = "accepted, but its outcome is unknown here"
    _report(console, masker, environment=environment, tag=tag, result=result, code=Exit.FAILED, reason=str(error))


def _report(
    console: Console,
    masker: Masker,
    *,
    environment: str,
    tag: str,
    result: str,
    code: int,
    reason: str,
    problems: Sequence[Problem] | None = None,
) -> None:
    reason = "\n".join(printable(line) for line in masker.mask(reason).splitlines())
    environment, tag = masker.mask(environment), masker.mask(tag)
    # Invalid input has an error line per problem at its file and line already: the headline only counts them.
    why = (
        f"{result}: {reason}" if problems is None else f"{result} ({len(problems)} problem(s), each its own error line)"
    )
    console.print(command("error", f"deploy of {environment} {tag}: {why}"))
    title = "not deployed" if code != Exit.FAILED else "outcome unknown"
    masked = [Problem(p.file, p.line, p.col, p.field, masker.mask(p.message)) for p in problems or ()]
    summary = not_run_markdown(
        environment=environment, tag=tag, result=result, code=code, reason=reason, title=title, problems=masked
    )
    try:
        append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), summary)
    except OSError as e:  # the reason the deploy did not run matters more than its summary
        console.error(f"cannot write the job summary ({e.strerror}); the error line above says why")
