"""The local commands (lint, render, dry-run) of the installed CLI, run as a subprocess from another directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import InProcessCli as Cli

SECRET = "canary-secret-value-0123456789"
DRY_RUN = ("dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")
RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": SECRET}


def test_lint_of_the_repository_is_clean(cli: Cli, workspace: Path) -> None:
    result = cli.run("lint", cwd=workspace)
    summary = "1 plan, infra/ENV_SCHEMA.md and .github/workflows/deploy.yml: no problems\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, summary, "")


def test_render_lowercases_the_repository(cli: Cli, workspace: Path) -> None:
    result = cli.run(
        "render", "plans/runtime.yaml", "--env", "prod", "--tag", "1.0.3", "--repository", "Acme/Trader", cwd=workspace
    )
    assert result.returncode == 0, result.stderr
    assert "image: ghcr.io/acme/trader/runtime:1.0.3" in result.stdout
    assert "environment: prod" in result.stdout


def test_render_json_takes_the_repository_from_github(cli: Cli, workspace: Path) -> None:
    result = cli.run(
        "render",
        "plans/runtime.yaml",
        "--env",
        "dev",
        "--tag",
        "a" * 40,
        "--format",
        "json",
        cwd=workspace,
        env={"GITHUB_REPOSITORY": "Owner/Repo"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["image"] == f"ghcr.io/owner/repo/runtime:{'a' * 40}"


def test_a_plan_that_uses_the_repository_needs_one(cli: Cli, workspace: Path) -> None:
    result = cli.run("render", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr == (
        "plans/runtime.yaml:4:8: image: uses {{ repository }}: give --repository owner/repo "
        "(or set GITHUB_REPOSITORY), e.g. acme/trader\n"
    )


@pytest.mark.parametrize("command", ["render", "dry-run"])
def test_a_plan_that_names_no_repository_renders_without_one(cli: Cli, workspace: Path, command: str) -> None:
    """Found as a new user: render, dry-run and apply demanded --repository even for a plan that never uses it."""
    plan = workspace / "plans" / "runtime.yaml"
    plan.write_text(plan.read_text().replace("ghcr.io/{{ repository }}/runtime", "registry.example.com/acme/runtime"))
    result = cli.run(command, "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", cwd=workspace, env=RUNTIME_ENV)
    assert result.returncode == 0, result.stderr
    assert "registry.example.com/acme/runtime:1.0.0" in result.stdout


def test_dry_run_lists_the_four_actions_and_masks_secrets(cli: Cli, workspace: Path) -> None:
    result = cli.run(
        *DRY_RUN,
        cwd=workspace,
        env=RUNTIME_ENV,
    )
    assert result.returncode == 0, result.stderr
    actions = [
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("  ") and line.strip()[0].isdigit()
    ]
    assert actions == ["pull", "stop_remove", "start", "verify"]
    assert "RUNTIME_API_TOKEN=****" in result.stdout
    assert "RUNTIME_LOG_LEVEL=info" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_dry_run_names_every_missing_required_variable(cli: Cli, workspace: Path) -> None:
    result = cli.run(
        *DRY_RUN,
        cwd=workspace,
        env={"RUNTIME_ENV": "dev"},
    )
    assert result.returncode == 2
    assert "RUNTIME_LOG_LEVEL, RUNTIME_API_TOKEN" in result.stderr


def test_lint_in_github_actions_annotates_the_line(cli: Cli, workspace: Path) -> None:
    plan = workspace / "plans" / "runtime.yaml"
    plan.write_text(plan.read_text().replace("action: stop_remove", "action: restart"))
    result = cli.run("lint", cwd=workspace, env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 1
    assert "plans/runtime.yaml:10:13: steps[1].action: step 2 must be 'stop_remove'" in result.stderr
    assert (
        "::error file=plans/runtime.yaml,line=10,col=13::steps[1].action: step 2 must be 'stop_remove'" in result.stdout
    )


@pytest.mark.parametrize("name", ["DEPLOY_AGENT_TOKEN", "CF_ACCESS_CLIENT_SECRET"])
def test_a_credential_that_cannot_be_a_header_is_named_never_shown(cli: Cli, workspace: Path, name: str) -> None:
    result = cli.run("status", "--agent", "http://127.0.0.1:9", cwd=workspace, env={name: "tok-SECRET-123\n"})
    assert result.returncode == 2
    assert name in result.stderr
    assert "SECRET" not in result.stdout + result.stderr.replace(name, "")


@pytest.mark.parametrize("argv", [["apply", "-h"], ["--help"], ["--verbose", "--version"]])
def test_help_and_version_return_through_run_instead_of_exiting(cli: Cli, workspace: Path, argv: list[str]) -> None:
    """Found in review: argparse's own --help raised SystemExit out of run(), past the one place that exits."""
    assert cli.run(*argv, cwd=workspace).returncode == 0
