"""`deployplan check`: its verdicts as tables (plain data in, one line out), and the CLI in-process."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import InProcessCli as Cli
from githubfake import OWNER_REPO, TOKEN, FakeGitHub, Repository
from runner.cli import agentchecks, preflight
from runner.cli.check import summary_table
from runner.cli.client import Credentials
from runner.cli.errors import UsageError
from runner.cli.githubsettings import branch_policy_verdict, codeowners_verdict, mapped_secrets, prod_bypasses
from runner.core.envschema import parse_env_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA = parse_env_schema(
    "| Variable | Required | Secret | Description |\n|---|---|---|---|\n"
    "| `A_PUBLIC` | yes | no | a |\n| `A_SECRET` | yes | yes | b |\n| `AN_OPTION` | no | no | c |\n",
    source="ENV_SCHEMA.md",
)


def levels(checks: list[preflight.Check]) -> dict[str, str]:
    return {c.name: c.level for c in checks}


# -- the variables of ENV_SCHEMA.md, as Required says


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"A_PUBLIC": "x", "A_SECRET": "y"}, {"A_PUBLIC": "ok", "A_SECRET": "ok", "AN_OPTION": "ok"}),
        ({"A_SECRET": "y"}, {"A_PUBLIC": "FAIL", "A_SECRET": "ok", "AN_OPTION": "ok"}),
        ({"A_PUBLIC": "x", "A_SECRET": ""}, {"A_PUBLIC": "ok", "A_SECRET": "FAIL", "AN_OPTION": "ok"}),
        ({"A_PUBLIC": "x", "A_SECRET": "y", "AN_OPTION": ""}, {"A_PUBLIC": "ok", "A_SECRET": "ok", "AN_OPTION": "ok"}),
    ],
)
def test_variables_as_required_says(environ: dict[str, str], expected: dict[str, str]) -> None:
    found = levels(preflight.variables(SCHEMA, environ, env="dev"))
    assert found == {f"variable {k}": v for k, v in expected.items()}


def test_an_empty_required_secret_is_named_as_what_github_does() -> None:
    [_, line, _] = preflight.variables(SCHEMA, {"A_PUBLIC": "x", "A_SECRET": ""}, env="prod")
    assert line.level == "FAIL"
    assert "an empty GitHub secret arrives as an empty string" in line.reason
    assert "the secret A_SECRET of the GitHub Environment 'prod'" in line.fix


def test_a_broken_rule_shows_a_public_value_and_never_a_secret() -> None:
    ruled = parse_env_schema(
        "| Variable | Required | Secret | Rule | Description |\n|---|---|---|---|---|\n"
        "| `A_PUBLIC` | yes | no | at least 8 characters | a |\n"
        "| `A_SECRET` | yes | yes | at least 16 characters | b |\n| `AN_OPTION` | no | no | any | c |\n",
        source="ENV_SCHEMA.md",
    )
    checks = preflight.variables(ruled, {"A_PUBLIC": "shown", "A_SECRET": "hidden-value"}, env="dev")
    assert [c.level for c in checks] == ["FAIL", "FAIL", "ok"]
    assert "'shown'" in checks[0].reason
    assert "hidden-value" not in checks[1].line() and "(secret, not shown)" in checks[1].reason


# -- the Access token pair


@pytest.mark.parametrize(
    ("environ", "level", "words"),
    [
        ({"CF_ACCESS_CLIENT_ID": "id.access", "CF_ACCESS_CLIENT_SECRET": "s"}, "ok", "both set"),
        ({}, "ok", "no Cloudflare Access"),
        ({"CF_ACCESS_CLIENT_ID": "", "CF_ACCESS_CLIENT_SECRET": ""}, "ok", "no Cloudflare Access"),
        ({"CF_ACCESS_CLIENT_ID": "id.access"}, "FAIL", "CF_ACCESS_CLIENT_SECRET is not set"),
        ({"CF_ACCESS_CLIENT_ID": "id.access", "CF_ACCESS_CLIENT_SECRET": ""}, "FAIL", "is empty (an empty GitHub"),
        ({"CF_ACCESS_CLIENT_SECRET": "s"}, "FAIL", "CF_ACCESS_CLIENT_SECRET is set but CF_ACCESS_CLIENT_ID is not"),
    ],
)
def test_access_pair(environ: dict[str, str], level: str, words: str) -> None:
    check = preflight.access_pair(environ)
    assert (check.level, words in check.reason) == (level, True), check.reason


@pytest.mark.parametrize(
    "environ",
    [{"CF_ACCESS_CLIENT_ID": "id.access", "CF_ACCESS_CLIENT_SECRET": ""}, {"CF_ACCESS_CLIENT_SECRET": "s3cret"}],
)
def test_the_client_refuses_one_access_variable_without_the_other(environ: dict[str, str]) -> None:
    """Found as a new user: an empty CF_ACCESS_CLIENT_SECRET made every command send no Access headers at all."""
    with pytest.raises(UsageError, match="set both, from the same Cloudflare Access service token, or neither"):
        Credentials.from_environ(environ)


def test_apply_with_half_an_access_token_exits_2_before_sending(cli: Cli, workspace: Path) -> None:
    env = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "x" * 20}
    env |= {"CF_ACCESS_CLIENT_ID": "id.access", "CF_ACCESS_CLIENT_SECRET": ""}
    args = ("apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", "--repository", "acme/trader")
    result = cli.run(*args, "--agent", "http://127.0.0.1:9", cwd=workspace, env=env)
    assert result.returncode == 2
    assert "CF_ACCESS_CLIENT_SECRET is empty" in result.stderr


# -- the clock


@pytest.mark.parametrize(
    ("date", "now", "level"),
    [
        ("Wed, 02 Dec 2026 23:00:00 GMT", 1796252400.0, "ok"),
        ("Wed, 02 Dec 2026 23:00:00 GMT", 1796252400.0 + 29, "ok"),
        ("Wed, 02 Dec 2026 23:00:00 GMT", 1796252400.0 + 31, "warn"),
        ("Wed, 02 Dec 2026 23:00:00 GMT", 1796252400.0 - 45, "warn"),
        (None, 0.0, "warn"),
        ("yesterday", 0.0, "warn"),
    ],
)
def test_clock(date: str | None, now: float, level: str) -> None:
    assert preflight.clock(date, now).level == level


# -- whoami, status, a dry run, OIDC

WHOAMI = {
    "actor": "a1b2.access",
    "may_deploy": {"dev": True, "prod": False},
    "may_prune": False,
    "environments": ["dev", "prod"],
    "repository": "ghcr.io/acme/trader/runtime",
    "version": "1.0.0",
    "github_oidc": "off",
}


@pytest.mark.parametrize(
    ("env", "changes", "repository", "expected"),
    [
        ("dev", {}, "ghcr.io/acme/trader/runtime", {"serves": "ok", "may deploy": "ok", "repository": "ok"}),
        ("prod", {}, "ghcr.io/acme/trader/runtime", {"serves": "ok", "may deploy": "FAIL", "repository": "ok"}),
        (
            "prod",
            {"environments": ["dev"]},
            "ghcr.io/acme/trader/runtime",
            {"serves": "FAIL", "may deploy": "FAIL", "repository": "ok"},
        ),
        ("dev", {}, "ghcr.io/acme/other/runtime", {"serves": "ok", "may deploy": "ok", "repository": "FAIL"}),
        ("dev", {}, None, {"serves": "ok", "may deploy": "ok", "repository": "warn"}),
    ],
)
def test_whoami(env: str, changes: dict[str, Any], repository: str | None, expected: dict[str, str]) -> None:
    found = levels(agentchecks.whoami({**WHOAMI, **changes}, env=env, repository=repository))
    assert found == {"identity": "ok", **expected}


def test_a_deployer_missing_names_the_variable_to_change() -> None:
    [line] = [c for c in agentchecks.whoami(WHOAMI, env="prod", repository=None) if c.name == "may deploy"]
    assert "'a1b2.access' may not deploy prod" in line.reason
    assert "DEPLOY_AGENT_DEPLOYERS_PROD" in line.fix


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ({"docker": "reachable", "audit": "ok"}, {"docker": "ok", "audit": "ok", "disk": "warn"}),
        (
            {"docker": "unreachable", "audit": "broken", "audit_problem": "seq 3"},
            {"docker": "FAIL", "audit": "FAIL", "disk": "warn"},
        ),
        (
            {"docker": "reachable", "audit": "ok", "deploy_in_progress": "d1"},
            {"docker": "ok", "audit": "ok", "deploy in progress": "warn", "disk": "warn"},
        ),
        (
            {"docker": "reachable", "audit": "ok", "disk": {"state_dir_free_bytes": 5 * 1024**3}},
            {"docker": "ok", "audit": "ok", "disk": "ok"},
        ),
        (
            {"docker": "reachable", "audit": "ok", "disk": {"state_dir_free_bytes": 1024}},
            {"docker": "ok", "audit": "ok", "disk": "warn"},
        ),
    ],
)
def test_status(agent: dict[str, Any], expected: dict[str, str]) -> None:
    assert levels(agentchecks.status({"agent": agent})) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"registry": {"found": True, "digest": "sha256:ab"}, "may_deploy": True}, {"registry": "ok", "dry run": "ok"}),
        (
            {"registry": {"found": False, "reason": "manifest unknown"}, "may_deploy": True},
            {"registry": "FAIL", "dry run": "ok"},
        ),
        (
            {"registry": {"found": True, "digest": "sha256:ab"}, "may_deploy": False},
            {"registry": "ok", "dry run": "FAIL"},
        ),
        ({}, {"registry": "warn", "dry run": "ok"}),
    ],
)
def test_dry_run(answer: dict[str, Any], expected: dict[str, str]) -> None:
    assert (
        levels(agentchecks.dry_run({"image": "r/runtime:1.0.0", "environment": "dev", **answer}, tag="1.0.0"))
        == expected
    )


def test_a_dry_run_whose_token_the_agent_refuses_fails_with_its_reason_and_the_setting_to_change() -> None:
    reason = (
        "the GitHub OIDC token does not allow this deploy: ref is 'refs/heads/feature', expected one of "
        "refs/heads/main (DEPLOY_AGENT_GITHUB_REFS)"
    )
    answer = {"registry": {"found": True, "digest": "sha256:ab"}, "may_deploy": False, "may_deploy_reason": reason}
    [_, line] = agentchecks.dry_run({"image": "r/runtime:1.0.0", "environment": "dev", **answer}, tag="1.0.0")
    assert line.level == "FAIL"
    assert line.reason.endswith(f"(a deploy would get 403): {reason}")
    assert line.fix.startswith("run the workflow from a ref listed in DEPLOY_AGENT_GITHUB_REFS")


@pytest.mark.parametrize(
    ("audience", "mode", "in_actions", "request_vars", "expected"),
    [
        (None, "off", True, False, [("oidc", "ok")]),
        (None, None, False, False, [("oidc", "ok")]),
        (None, "required", True, True, [("oidc", "FAIL")]),
        ("https://deploy.example.com", "off", True, True, [("oidc", "warn")]),
        ("https://deploy.example.com", "required", False, False, [("oidc token", "warn")]),
        ("https://deploy.example.com", "required", True, False, [("oidc token", "FAIL")]),
        ("https://deploy.example.com", "required", True, True, []),
    ],
)
def test_oidc(
    audience: str | None, mode: str | None, in_actions: bool, request_vars: bool, expected: list[Any]
) -> None:
    found = agentchecks.oidc(audience=audience, agent_mode=mode, in_actions=in_actions, request_vars=request_vars)
    assert [(c.name, c.level) for c in found] == expected


def _jwt(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


@pytest.mark.parametrize(
    ("token", "level"),
    [
        (_jwt({"aud": "https://deploy.example.com"}), "ok"),
        (_jwt({"aud": ["x", "https://deploy.example.com"]}), "ok"),
        (_jwt({"aud": "https://elsewhere"}), "FAIL"),
        ("not-a-jwt", "FAIL"),
    ],
)
def test_token_audience(token: str, level: str) -> None:
    check = agentchecks.token_audience(token, "https://deploy.example.com", use="sent with the dry run below")
    assert check.level == level
    assert level == "FAIL" or check.reason.endswith("(sent with the dry run below)")


# -- GitHub's settings, as data


@pytest.mark.parametrize(
    ("policy", "custom", "level"),
    [
        (None, None, "FAIL"),
        ({"protected_branches": True, "custom_branch_policies": False}, None, "ok"),
        ({"protected_branches": False, "custom_branch_policies": True}, [{"name": "main", "type": "branch"}], "ok"),
        ({"protected_branches": False, "custom_branch_policies": True}, [{"name": "*", "type": "branch"}], "FAIL"),
        ({"protected_branches": False, "custom_branch_policies": True}, [{"name": "**/*", "type": "branch"}], "FAIL"),
        ({"protected_branches": False, "custom_branch_policies": True}, [], "FAIL"),
        ({"protected_branches": False, "custom_branch_policies": False}, None, "FAIL"),
    ],
)
def test_branch_policy(policy: Any, custom: Any, level: str) -> None:
    assert branch_policy_verdict("prod", policy, custom).level == level


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            {
                "protection_rules": [{"type": "required_reviewers", "prevent_self_review": True}],
                "can_admins_bypass": False,
            },
            [],
        ),
        (
            {
                "protection_rules": [{"type": "required_reviewers", "prevent_self_review": False}],
                "can_admins_bypass": False,
            },
            ["prod self-review"],
        ),
        ({"protection_rules": [], "can_admins_bypass": True}, ["prod admin bypass"]),
        ({"protection_rules": []}, ["prod admin bypass"]),
    ],
)
def test_ways_around_prods_reviewers_are_warned(environment: dict[str, Any], expected: list[str]) -> None:
    found = prod_bypasses(environment)
    assert [c.name for c in found] == expected
    assert {c.level for c in found} <= {"warn"}


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ((REPO / ".github" / "CODEOWNERS").read_text(), "FAIL"),  # as shipped: the placeholder
        ("/plans/ @acme/deploy-owners\n", "ok"),
        ("# only comments\n", "FAIL"),
        ("/plans/ <team>\n", "FAIL"),
        ("/plans/ @acme/deploy-owners\n/infra/ @owner/deploy-owners\n", "FAIL"),
    ],
)
def test_codeowners(text: str, level: str) -> None:
    assert codeowners_verdict(text).level == level


def test_the_secrets_deploy_yml_maps() -> None:
    schema = parse_env_schema((REPO / "infra" / "ENV_SCHEMA.md").read_text(), source="ENV_SCHEMA.md")
    names, optional = mapped_secrets(REPO / ".github" / "workflows" / "deploy.yml", schema)
    assert {"DEPLOY_AGENT_URL", "CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET", "RUNTIME_API_TOKEN"} <= set(names)
    assert optional == {"RUNTIME_FAULT"}


# -- the CLI in-process: usage, and --github against GitHub's API played on loopback


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(Repository())
    yield fake
    fake.close()


def _github_env(fake: FakeGitHub, **more: str) -> dict[str, str]:
    return {"GH_TOKEN": TOKEN, "GITHUB_API_URL": fake.url, "GITHUB_REPOSITORY": OWNER_REPO, **more}


def _github_lines(result: Any) -> dict[str, str]:
    data = json.loads(result.stdout)
    return {
        c["name"]: c
        for c in data["checks"]
        if c["name"].startswith(("github", "dev ", "prod ", "default", "codeowners"))
    }


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--env", "staging"), {}, "'staging' is not an environment"),
        (("--env", "dev", "--tag", "latest"), {}, "tag"),
        (("--env", "dev", "--github"), {}, "--github needs a token in GH_TOKEN or GITHUB_TOKEN"),
        (("--env", "dev", "--github"), {"GH_TOKEN": "t"}, "--github needs the repository"),
        (
            ("--env", "dev", "--github", "--repository", "a/b"),
            {"GH_TOKEN": "t", "GITHUB_API_URL": "http://example.com"},
            "must be an https:// URL",
        ),
    ],
)
def test_bad_usage_exits_2(cli: Cli, workspace: Path, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = cli.run("check", *args, cwd=workspace, env=env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


def test_github_settings_as_they_should_be(cli: Cli, workspace: Path, github: FakeGitHub) -> None:
    result = cli.run("check", "--env", "dev", "--github", "--json", cwd=workspace, env=_github_env(github))
    found = _github_lines(result)
    assert {name: c["level"] for name, c in found.items()} == {
        "github": "ok",
        "dev environment": "ok",
        "dev reviewers": "ok",
        "dev branches": "ok",
        "dev secrets": "ok",
        "prod environment": "ok",
        "prod reviewers": "ok",
        "prod branches": "ok",
        "prod secrets": "ok",
        "default branch": "ok",
        "codeowners": "ok",
    }
    assert f"/repos/{OWNER_REPO}/environments/prod/deployment-branch-policies" in github.paths


def test_github_prod_without_a_reviewer(cli: Cli, workspace: Path, github: FakeGitHub) -> None:
    github.repository.environments["prod"]["protection_rules"] = []
    result = cli.run("check", "--env", "prod", "--github", cwd=workspace, env=_github_env(github))
    assert result.returncode == 1
    assert "FAIL  prod reviewers: prod has no required reviewer: any deploy job runs at once; change: " in result.stdout


@pytest.mark.parametrize(
    ("change", "name", "words"),
    [
        (lambda r: r.environments.pop("prod"), "prod environment", "the environment prod does not exist"),
        (lambda r: r.environments["dev"].update(deployment_branch_policy=None), "dev branches", "any branch or tag"),
        (
            lambda r: r.secrets["prod"].remove("CF_ACCESS_CLIENT_SECRET"),
            "prod secrets",
            "missing in the environment prod: CF_ACCESS_CLIENT_SECRET",
        ),
        (lambda r: setattr(r, "protection", None), "default branch", "main is not protected"),
        (
            lambda r: r.protection["required_pull_request_reviews"].update(require_code_owner_reviews=False),
            "default branch",
            "not from code owners",
        ),
        (
            lambda r: setattr(r, "codeowners", "/plans/ @OWNER/deploy-owners\n"),
            "codeowners",
            "placeholder owner @OWNER/deploy-owners",
        ),
        (lambda r: r.permissions.discard("secrets"), "dev secrets", "this token cannot read the secrets of dev"),
        (lambda r: r.permissions.discard("administration"), "default branch", "cannot read the protection of main"),
    ],
)
def test_github_settings_that_fail(
    cli: Cli, workspace: Path, github: FakeGitHub, change: Any, name: str, words: str
) -> None:
    change(github.repository)
    result = cli.run("check", "--env", "dev", "--github", "--json", cwd=workspace, env=_github_env(github))
    assert result.returncode == 1
    line = _github_lines(result)[name]
    assert (line["level"], words in line["reason"]) == ("FAIL", True), line


def test_a_token_without_a_permission_is_told_which(cli: Cli, workspace: Path, github: FakeGitHub) -> None:
    github.repository.permissions.discard("secrets")
    result = cli.run("check", "--env", "dev", "--github", "--json", cwd=workspace, env=_github_env(github))
    line = _github_lines(result)["dev secrets"]
    assert "GitHub wants: secrets=read" in line["reason"]
    assert "'Environments' and 'Secrets: read'" in line["fix"]


def test_a_token_github_refuses(cli: Cli, workspace: Path, github: FakeGitHub) -> None:
    result = cli.run(
        "check",
        "--env",
        "dev",
        "--github",
        "--json",
        cwd=workspace,
        env=_github_env(github, GH_TOKEN="ghp_refused0123456789"),
    )
    assert result.returncode == 1
    line = _github_lines(result)["github"]
    assert "GitHub did not accept the token" in line["reason"]
    assert "ghp_refused0123456789" not in result.stdout  # the token itself is never shown


def test_github_mode_writes_errors_and_a_summary_table(
    cli: Cli, workspace: Path, github: FakeGitHub, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    github.repository.environments["prod"]["protection_rules"] = []
    env = _github_env(
        github, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), RUNTIME_API_TOKEN="sekret-value-123"
    )
    result = cli.run("check", "--env", "dev", "--github", cwd=workspace, env=env)
    assert result.returncode == 1
    assert "::add-mask::sekret-value-123" in result.stdout
    assert "::error::check prod reviewers: prod has no required reviewer" in result.stdout
    text = summary.read_text()
    assert "| result | check | reason | change |" in text
    assert "| **FAIL** | prod reviewers | `prod has no required reviewer" in text
    assert "sekret-value-123" not in text


def test_json_in_github_masks_the_secrets_on_stderr_and_keeps_stdout_pure_json(
    cli: Cli, workspace: Path, tmp_path: Path
) -> None:
    env = {
        "RUNTIME_ENV": "dev",
        "RUNTIME_LOG_LEVEL": "info",
        "RUNTIME_API_TOKEN": "sekret-value-1234567",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    result = cli.run("check", "--env", "dev", "--repository", "acme/trader", "--json", cwd=workspace, env=env)
    assert json.loads(result.stdout)["environment"] == "dev"  # the whole of stdout is the document
    assert "::add-mask::sekret-value-1234567" in result.stderr.splitlines()
    assert "sekret-value-1234567" not in result.stdout
    # No agent here: its FAIL is an ::error:: line too, on stderr with the masks.
    assert json.loads(result.stdout)["ok"] is False
    assert any(line.startswith("::error::check agent: ") for line in result.stderr.splitlines()), result.stderr


def test_the_summary_shows_other_parties_words_as_text_that_draws_nothing() -> None:
    """A registry's (or the agent's, or GitHub's) words in a reason: no image, no link, no tag, no bold, and one
    row whatever pipes or line breaks they hold."""
    hostile = (
        "manifest unknown ![pwned](https://evil.example/x.png) [re-run here](https://evil.example/run) "
        "<img src=x onerror=alert(1)> **SUCCEEDED** `closed` | cell\n# heading"
    )
    checks = [preflight.fail("registry", hostile, f"ask {hostile}"), preflight.ok("clock", "fine")]
    text = summary_table(checks, env="dev")
    rows = text.splitlines()
    assert len(rows) == 6 and rows[4].startswith("| **FAIL** | registry | `manifest unknown ![pwned]")
    outside_code = re.sub(r"`[^`\n]*`", "", text)
    for drawn in ("![", "](http", "<img", "**SUCCEEDED**", "# heading"):
        assert drawn not in outside_code, outside_code
    assert "\\| cell" in rows[4]  # the pipe stays in its cell
    assert rows[5] == "| ok | clock | `fine` |  |"


def test_the_report_shows_terminal_controls_in_other_parties_words_escaped() -> None:
    from runner.cli.check import _report
    from runner.cli.console import Console

    out = io.StringIO()
    console = Console(out=out, err=io.StringIO(), github=False)
    _report(
        console,
        [preflight.fail("registry", "manifest unknown\x1b[2J\x1b]0;owned\x07", "push it")],
        env="dev",
        as_json=False,
    )
    assert "\x1b" not in out.getvalue() and "manifest unknown\\x1b[2J" in out.getvalue()


@pytest.mark.parametrize(
    ("environ", "name", "words"),
    [
        ({"RUNTIME_ENV": "prod"}, "variable RUNTIME_ENV", "the value 'prod' breaks the rule 'environment'"),
        ({"RUNTIME_LOG_LEVEL": "loud"}, "variable RUNTIME_LOG_LEVEL", "the value 'loud' breaks the rule 'one of:"),
        ({"RUNTIME_API_TOKEN": "short-secret"}, "variable RUNTIME_API_TOKEN", "the value (secret, not shown) breaks"),
        ({"RUNTIME_API_TOKEN": ""}, "variable RUNTIME_API_TOKEN", "an empty GitHub secret arrives as an empty string"),
        ({"RUNTIME_FAULT": "explode"}, "variable RUNTIME_FAULT", "breaks the rule 'pattern:"),
        (
            {"RUNTIME_API_TOKEN": "short-secret-but-long-enough\n"},
            "variable RUNTIME_API_TOKEN",
            "the value (secret, not shown) contains a control character (U+000A) at character 29",
        ),
        ({"RUNTIME_LOG_LEVEL": "info\t"}, "variable RUNTIME_LOG_LEVEL", "the value 'info\\t' contains a control"),
    ],
)
def test_each_variable_passes_its_rule(
    cli: Cli, workspace: Path, environ: dict[str, str], name: str, words: str
) -> None:
    env = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "x" * 20, **environ}
    result = cli.run("check", "--env", "dev", "--repository", "acme/trader", "--json", cwd=workspace, env=env)
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert (checks[name]["level"], words in checks[name]["reason"]) == ("FAIL", True), checks[name]
    assert "short-secret" not in result.stdout
    others = [c for n, c in checks.items() if n.startswith("variable ") and n != name]
    assert all(c["level"] == "ok" for c in others), others


def test_a_redirect_is_reported_and_the_token_never_follows_it(cli: Cli, workspace: Path, github: FakeGitHub) -> None:
    elsewhere = FakeGitHub(Repository())
    try:
        github.repository.moved_to = f"{elsewhere.url}/repositories/1296269"
        result = cli.run("check", "--env", "dev", "--github", "--json", cwd=workspace, env=_github_env(github))
    finally:
        elsewhere.close()
    line = _github_lines(result)["github"]
    assert line["level"] == "FAIL"
    assert "redirect to " in line["reason"] and "a renamed repository? use its new name" in line["reason"]
    assert elsewhere.paths == []  # the token went to GITHUB_API_URL only


def test_without_a_readable_deploy_workflow_the_secrets_are_not_said_to_be_set(
    cli: Cli, workspace: Path, github: FakeGitHub
) -> None:
    (workspace / ".github" / "workflows" / "deploy.yml").unlink()
    result = cli.run("check", "--env", "dev", "--github", "--json", cwd=workspace, env=_github_env(github))
    for env in ("dev", "prod"):
        line = _github_lines(result)[f"{env} secrets"]
        assert line["level"] == "warn" and "not compared" in line["reason"], line


@pytest.mark.parametrize(
    ("answer", "refused", "levels"),
    [
        ({"registry": {"found": True, "digest": "sha256:" + "a" * 64}, "may_deploy": True}, False, ["ok", "ok"]),
        ({"registry": {"found": False, "reason": "manifest unknown"}, "may_deploy": True}, True, ["FAIL", "ok"]),
        ({"registry": {"found": False, "busy": True, "reason": "busy"}, "may_deploy": True}, True, ["warn", "ok"]),
        ({"registry": {"found": True, "digest": "sha256:" + "a" * 64}, "may_deploy": False}, True, ["ok", "FAIL"]),
        # An agent whose dry run says neither: unsure in both, a refusal in neither.
        ({}, False, ["warn", "ok"]),
    ],
)
def test_dry_run_and_check_read_a_dry_run_answer_alike(
    answer: dict[str, Any], refused: bool, levels: list[str]
) -> None:
    from runner.cli import agentchecks
    from runner.cli.report import refusal

    answer = {"image": "ghcr.io/acme/trader/runtime:1.0.3", "environment": "dev", **answer}
    assert (refusal(answer) is not None) == refused
    assert [c.level for c in agentchecks.dry_run(answer, tag="1.0.3")] == levels
