"""GitHub Actions mode: masks, groups, errors, and the markdown job summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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


def summary_markdown(deployment: Mapping[str, Any], *, verified: str, logs: list[str]) -> str:
    """The job summary: who deployed what where, each step with its state and duration, the log tail on failure."""
    rows = [
        "| | |",
        "|---|---|",
        f"| environment | `{deployment.get('environment')}` |",
        f"| image | `{deployment.get('image')}` |",
        f"| tag | `{deployment.get('tag')}` |",
        f"| digest | `{deployment.get('digest') or '-'}` |",
        f"| actor | `{deployment.get('actor')}` |",
        f"| deployment id | `{deployment.get('id')}` |",
        f"| result | **{deployment.get('state')}** |",
        f"| verified through /v1/status | {verified} |",
    ]
    steps = ["| step | name | state | duration | message |", "|---|---|---|---|---|"]
    for step in deployment.get("steps", []):
        message = str(step.get("message", "")).replace("|", "\\|").replace("\n", " ")
        steps.append(f"| {step['action']} | {step['name']} | {step['state']} | {duration(step)} | {message} |")
    text = f"## deployplan: {deployment.get('environment')} {deployment.get('tag')}\n\n" + "\n".join(rows)
    text += "\n\n" + "\n".join(steps) + "\n"
    error = deployment.get("error")
    if error:
        text += f"\n**Failed in `{error.get('step')}`:** {error.get('message')}\n"
    if logs and deployment.get("state") != "succeeded":
        text += (
            "\n<details open><summary>the container's last log lines</summary>\n\n```\n"
            + "\n".join(logs)
            + "\n```\n</details>\n"
        )
    return text


def append_summary(path: str | None, text: str) -> None:
    """Append to $GITHUB_STEP_SUMMARY when it is set."""
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(text + "\n")
