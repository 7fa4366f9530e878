"""GitHub Actions mode: masks, groups, errors, and the markdown job summary."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.core.problems import Problem
from runner.core.schema import validator
from runner.core.times import duration


def command(name: str, data: str) -> str:
    """A workflow command line; the runner unescapes `%25`, `%0D` and `%0A` in its data, so they are escaped here."""
    return f"::{name}::" + data.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def mask_lines(values: Iterable[str]) -> list[str]:
    """`::add-mask::` for every secret value (each line of a multi-line value too), printed before anything else."""
    lines = []
    for value in values:
        for part in value.splitlines() or [value]:
            if part.strip():
                # Unescaped, a value holding `%25` would mask another string than itself.
                lines.append(command("add-mask", part))
    return lines


def origin(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Where this deploy was started, from the GITHUB_* variables of a workflow run (None outside GitHub Actions).

    A value the agent would refuse (too long, not https) is left out rather than blocking the deploy: the origin
    is a claim for the record, not a condition.
    """
    if environ.get("GITHUB_ACTIONS") != "true":
        return None
    server, repository, run = (environ.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    attempt = environ.get("GITHUB_RUN_ATTEMPT", "")
    candidates = {
        "run_url": f"{server}/{repository}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")
        if server and repository and run
        else "",
        "actor": environ.get("GITHUB_TRIGGERING_ACTOR") or environ.get("GITHUB_ACTOR", ""),
        "repository": repository,
        "sha": environ.get("GITHUB_SHA", ""),
        "ref": environ.get("GITHUB_REF", ""),
        "workflow": environ.get("GITHUB_WORKFLOW", ""),
    }
    request = validator("deploy-request.schema.json")
    fields = request.schema["properties"]["origin"]["properties"]  # type: ignore[index]
    found = {k: v for k, v in candidates.items() if v and request.evolve(schema=fields[k]).is_valid(v)}
    return found or None


def summary_markdown(
    deployment: Mapping[str, Any], *, verified: str, logs: list[str], mask: Callable[[str], str]
) -> str:
    """The job summary: who deployed what where and from which run, each step with its state and duration, the
    audit head to keep, the log tail on failure. Every value is masked first, then escaped: escaping first would
    change a secret holding `&`, `<` or `|` so that the mask no longer finds it. Text from the runtime (a step's
    message, the error) is inline code and the log tail escaped in <pre>: plain text, whatever markdown or HTML
    it holds, so it cannot draw a link, an image, a heading or bold words in the summary."""

    def cell(value: object) -> str:
        return table_cell(mask(str(value)))

    def code(value: object) -> str:
        return inline_code(mask(str(value)))

    started = deployment.get("origin") or {}
    head = deployment.get("audit_head") or {}
    trust = " (verified by its GitHub OIDC token)" if started.get("verified") is True else " (claimed)"
    on_behalf = f" for {code(started['actor'])}{trust}" if started.get("actor") else ""
    head_text = code(f"{head.get('seq')}:{head.get('hash')}") if head else "-"
    rows = [
        "| | |",
        "|---|---|",
        f"| environment | {code(deployment.get('environment'))} |",
        f"| image | {code(deployment.get('image'))} |",
        f"| tag | {code(deployment.get('tag'))} |",
        f"| digest | {code(deployment.get('digest') or '-')} |",
        f"| actor | {code(deployment.get('actor'))}{on_behalf} |",
        f"| workflow run | {cell(started.get('run_url', '-'))} |",
        f"| deployment id | {code(deployment.get('id'))} |",
        f"| result | **{cell(deployment.get('state'))}** |",
        f"| verified through /v1/status | {verified} |",
        f"| audit head | {head_text} |",
    ]
    steps = ["| step | name | state | duration | message |", "|---|---|---|---|---|"]
    for step in deployment.get("steps", []):
        cells = (step.get("action"), step.get("name"), step.get("state"), duration(step))
        message = code(step["message"]) if step.get("message") else ""
        steps.append("| " + " | ".join(cell(c) for c in cells) + f" | {message} |")
    title = f"## deployplan: {cell(deployment.get('environment'))} {cell(deployment.get('tag'))}"
    text = f"{title}\n\n" + "\n".join(rows) + "\n\n" + "\n".join(steps) + "\n"
    error = deployment.get("error")
    if error:
        text += f"\n**Failed in {code(error.get('step'))}:** {code(error.get('message'))}\n"
    if logs and deployment.get("state") != "succeeded":
        # <pre> with escaped text: a log line cannot close a code fence and become markdown.
        text += (
            "\n<details open><summary>the container's last log lines</summary>\n\n<pre>\n"
            + "\n".join(html.escape(mask(line)) for line in logs)
            + "\n</pre>\n</details>\n"
        )
    return text


def rules_summary(problems: Iterable[Problem], *, environment: str) -> str:
    """The job summary of a dry run refused before sending: a row per missing variable or broken rule."""
    return (
        f"## deployplan: {table_cell(environment)} refused before sending\n\n"
        "Runtime variables are missing or break their rule in the variable table; nothing was sent to the agent.\n\n"
        + problem_rows(problems)
    )


def problem_rows(problems: Iterable[Problem]) -> str:
    """A markdown table, a row per finding: the variable (or file) and what is wrong with it, both as inline code
    (a finding may quote the input: a tag like `<img src=x>` must not draw)."""
    rows = [f"| {inline_code(p.field or p.file)} | {inline_code(p.message)} |" for p in problems]
    return "| variable | problem |\n|---|---|\n" + "\n".join(rows) + "\n"


def append_summary(path: str | None, text: str) -> None:
    """Append to $GITHUB_STEP_SUMMARY when it is set."""
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(text + "\n")


def table_cell(value: object) -> str:
    """Text for a markdown table cell: one line, no cell separator."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def inline_code(value: object) -> str:
    """A value as inline code in a table cell: nothing in it is markdown or HTML (no link, image, heading or tag;
    GitHub makes no link of a URL in code either); a backtick in it cannot end the code span."""
    return "`" + table_cell(value).replace("`", "'") + "`"


def not_run_markdown(
    *,
    environment: str,
    tag: str,
    result: str,
    code: int,
    reason: str,
    title: str = "not deployed",
    problems: Sequence[Problem] = (),
) -> str:
    """The job summary of a deploy that never ran (refused, invalid, the agent unreachable): what and why. The
    reason is text from elsewhere (the agent's message): escaped into <pre>, it cannot draw links or headings.
    Findings of invalid input are a table instead, a row each."""
    rows = [
        "| | |",
        "|---|---|",
        f"| environment | {inline_code(environment)} |",
        f"| tag | {inline_code(tag)} |",
        f"| result | {inline_code(result)} |",
        f"| exit code | {code} |",
    ]
    heading = f"## deployplan: {inline_code(environment)} {inline_code(tag)} {table_cell(title)}"
    why = problem_rows(problems) if problems else f"<pre>\n{html.escape(reason)}\n</pre>\n"
    return f"{heading}\n\n" + "\n".join(rows) + "\n\n" + why
