"""GitHub Actions mode: the origin sent with a deploy, and the job summary (masked, then escaped)."""

from __future__ import annotations

import html

import pytest
from markdown_it import MarkdownIt

from runner.cli.github import origin, summary_markdown
from runner.core.secrets import Masker

RUN = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/trader",
    "GITHUB_RUN_ID": "42",
    "GITHUB_RUN_ATTEMPT": "3",
    "GITHUB_ACTOR": "ci-bot",
    "GITHUB_TRIGGERING_ACTOR": "octocat",
    "GITHUB_SHA": "a" * 40,
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_WORKFLOW": "Deploy",
}


def test_the_origin_of_a_workflow_run() -> None:
    assert origin(RUN) == {
        "run_url": "https://github.com/acme/trader/actions/runs/42/attempts/3",
        "actor": "octocat",
        "repository": "acme/trader",
        "sha": "a" * 40,
        "ref": "refs/heads/main",
        "workflow": "Deploy",
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"GITHUB_TRIGGERING_ACTOR": ""}, {"actor": "ci-bot"}),
        ({"GITHUB_RUN_ATTEMPT": ""}, {"run_url": "https://github.com/acme/trader/actions/runs/42"}),
        ({"GITHUB_SERVER_URL": "http://ghes.internal"}, {"run_url": None}),  # not https: left out
        ({"GITHUB_SHA": "abc"}, {"sha": None}),
        ({"GITHUB_WORKFLOW": "w" * 201}, {"workflow": None}),
        ({"GITHUB_REF": "refs/heads/\x1b[2J"}, {"ref": None}),
    ],
)
def test_a_value_the_agent_would_refuse_is_left_out(changes: dict[str, str], expected: dict[str, str | None]) -> None:
    found = origin({**RUN, **changes})
    assert found is not None
    for key, value in expected.items():
        assert found.get(key) == value


def test_no_origin_outside_github_actions() -> None:
    assert origin({k: v for k, v in RUN.items() if k != "GITHUB_ACTIONS"}) is None


def test_the_summary_masks_before_it_escapes() -> None:
    """Found in review: masking the escaped summary missed a secret holding `&`, `<` or `|`."""
    secret = "p&ss<w|rd>42"
    deployment = {
        "environment": "dev",
        "tag": "1.0.0",
        "state": "failed",
        "steps": [{"action": "verify", "name": "Verify", "state": "failed", "message": f"unhealthy: {secret}"}],
        "error": {"step": "verify", "message": f"unhealthy: {secret}"},
        "actor": "token",
        "audit_head": {"seq": 9, "hash": "f" * 64},
        "origin": {"run_url": "https://github.com/acme/trader/actions/runs/1", "actor": "o|c`t"},
    }
    text = summary_markdown(deployment, verified="no", logs=[f"token {secret}"], mask=Masker([secret]).mask)
    assert "p&amp;ss" not in text and "ss&lt;w" not in text and "w\\|rd" not in text and "rd&gt;42" not in text
    assert text.count("****") == 3
    assert "| actor | `token` for `o\\|c't` (claimed) |" in text
    assert f"| audit head | `9:{'f' * 64}` |" in text


HOSTILE = ["![ok](https://x.test/i.png)", "[re-run here](https://x.test)", "**SUCCEEDED**", "<img src=x>", "# Done"]


@pytest.mark.parametrize("text", HOSTILE)
def test_runtime_text_is_plain_text_in_the_summary(text: str) -> None:
    """Found in review: healthcheck output such as `![ok](...)`, `[re-run here](...)`, `**SUCCEEDED**` or `<img>`
    drew images, links and bold words in the summary; the "Failed in" line escaped HTML but not markdown."""
    deployment = {
        "environment": "dev",
        "tag": "1.0.0",
        "state": "failed",
        "steps": [{"action": "verify", "name": "Verify", "state": "failed", "message": f"{text}\n{text}"}],
        "error": {"step": "verify", "message": text},
        "actor": "token",
    }
    summary = summary_markdown(deployment, verified="no", logs=[text, f"{text} again"], mask=Masker([]).mask)

    rendered = MarkdownIt("commonmark").enable("table").render(summary)
    assert "<img" not in rendered and "<a " not in rendered and "<strong>SUCCEEDED" not in rendered
    assert [tag for tag in ("<h1>", "<h2>", "<h3>") if tag in rendered] == ["<h2>"]  # the summary's own title only
    # Shown as written, every time it was sent.
    assert rendered.count(html.escape(text, quote=False)) == 5, rendered
