"""The operator's daily CLI, in-process: colour, help, lint's summary, dry-run's --local and --confirm, GitHub
mode for a deploy that never ran, `follow`, and `audit pull` / `audit verify --agent` against a served agent."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.auditlog import AuditLog
from conftest import TOKEN, Api, record_deployment
from conftest import InProcessCli as Cli
from forgery import rechained
from runner.cli.console import Console, wants_color
from runner.cli.main import COMMANDS, run

RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "canary-secret-value-0123456789"}
APPLY = ("apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("tty", "environ", "colour"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
        (False, {"FORCE_COLOR": "1"}, True),
        (False, {"FORCE_COLOR": "0"}, False),
        (False, {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),  # "never" wins
    ],
)
def test_colour_on_a_terminal_never_with_no_color_forced_by_force_color(
    tty: bool, environ: dict[str, str], colour: bool
) -> None:
    assert wants_color(Tty() if tty else io.StringIO(), environ) is colour


def test_lint_says_so_when_clean_and_colours_only_when_asked(cli: Cli, workspace: Path) -> None:
    plain = cli.run("lint", cwd=workspace)
    forced = cli.run("lint", cwd=workspace, env={"FORCE_COLOR": "1"})
    refused = cli.run("lint", cwd=workspace, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    summary = "1 plan, infra/ENV_SCHEMA.md and .github/workflows/deploy.yml: no problems\n"
    assert plain.stdout == refused.stdout == summary
    assert forced.stdout == summary.replace("no problems", "\033[32;1mno problems\033[0m")


def test_error_prefix_is_red_only_on_a_colour_stream(workspace: Path) -> None:
    out, err = io.StringIO(), Tty()
    console = Console(out=out, err=err, github=False, environ={})
    assert run(["status", "--agent", "ftp://x"], console) == 2
    assert err.getvalue().startswith("\033[31;1merror:\033[0m --agent 'ftp://x' must be")


@pytest.mark.parametrize(
    "argv", [[name, "--help"] for name in COMMANDS] + [["audit", "verify", "-h"], ["audit", "pull", "-h"]]
)
def test_every_help_has_an_example_and_the_exit_codes(
    cli: Cli, workspace: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(*argv, cwd=workspace).returncode == 0
    example, codes = capsys.readouterr().out.split("example:\n")[1].split("\n\nexit codes:\n")
    assert example.startswith("  deployplan ")
    assert codes.splitlines()[0].lstrip().startswith(("0 ", "see "))


# -- dry-run: --local, the note about DEPLOY_AGENT_URL, --confirm


@pytest.fixture
def served(make_api: Callable[..., Api], serve: Callable[[Api], str]) -> tuple[Api, str]:
    api = make_api()
    return api, serve(api)


def test_dry_run_local_asks_no_agent_even_with_deploy_agent_url(cli: Cli, workspace: Path) -> None:
    # Nothing listens on port 9: asking the agent would be exit 3.
    env = {**RUNTIME_ENV, "DEPLOY_AGENT_URL": "http://127.0.0.1:9"}
    result = cli.run("dry-run", *APPLY[1:], "--local", cwd=workspace, env=env)
    assert result.returncode == 0, result.stderr
    assert "would ask the agent to run, in this order:" in result.stdout
    assert result.stderr == ""


def test_dry_run_local_shows_a_value_escaped_never_acted_on(cli: Cli, workspace: Path) -> None:
    # A bidi override and a terminal control in a public value: printed as escapes (and refused by its rule).
    env = {**RUNTIME_ENV, "RUNTIME_ENV": "dev\u202e\x1b[2J"}
    result = cli.run("dry-run", *APPLY[1:], "--local", cwd=workspace, env=env)
    assert result.returncode == 2
    assert "  RUNTIME_ENV=dev\\u202e\\x1b[2J\n" in result.stdout
    assert "\u202e" not in result.stdout and "\x1b" not in result.stdout


def test_dry_run_says_it_asks_the_agent_of_deploy_agent_url(cli: Cli, workspace: Path) -> None:
    env = {**RUNTIME_ENV, "DEPLOY_AGENT_URL": "http://127.0.0.1:9"}
    result = cli.run("dry-run", *APPLY[1:], cwd=workspace, env=env)
    assert result.returncode == 3
    assert result.stderr.startswith(
        "asking the agent at http://127.0.0.1:9 (from DEPLOY_AGENT_URL); --local for a local dry run only\n"
    )


def test_local_and_agent_together_are_a_usage_error(cli: Cli, workspace: Path) -> None:
    result = cli.run("dry-run", *APPLY[1:], "--local", "--agent", "http://x", cwd=workspace, env=RUNTIME_ENV)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_dry_run_sends_the_confirm_it_is_given_and_refuses_a_wrong_one_first(
    cli: Cli, workspace: Path, served: tuple[Api, str]
) -> None:
    api, url = served
    env = {**RUNTIME_ENV, "RUNTIME_ENV": "prod", "DEPLOY_AGENT_URL": url, "DEPLOY_AGENT_TOKEN": TOKEN}
    prod = ("dry-run", "plans/runtime.yaml", "--env", "prod", "--tag", "1.0.3", "--repository", "acme/trader")
    wrong = cli.run(*prod, "--confirm", "prod:1.0.2", cwd=workspace, env=env)
    assert wrong.returncode == 2
    assert "a prod deploy needs --confirm prod:1.0.3 (given: prod:1.0.2); nothing was sent" in wrong.stderr
    right = cli.run(*prod, "--confirm", "prod:1.0.3", cwd=workspace, env=env)
    assert "the agent refused" in right.stderr and "$.confirm" not in right.stderr  # (refused for its image only)
    # Sent as apply sends it, the agent judges it: a confirm that is not prod:<...> is refused by its schema.
    sent = cli.run("dry-run", *APPLY[1:], "--confirm", "yes", cwd=workspace, env={**env, "RUNTIME_ENV": "dev"})
    assert sent.returncode == 3 and "$.confirm" in sent.stderr
    assert all(r["event"] != "deployment_started" for r in api.audit())


# -- GitHub mode: a deploy that never ran leaves an ::error:: and a job summary


def github_env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {**RUNTIME_ENV, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), **more}


def test_github_unreachable_apply_writes_error_and_summary(cli: Cli, workspace: Path, tmp_path: Path) -> None:
    env = github_env(tmp_path, DEPLOY_AGENT_URL="http://127.0.0.1:9")
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 3
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error::")]
    assert len(errors) == 1 and errors[0].startswith("::error::deploy of dev 1.0.3: the agent could not be reached: ")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("## deployplan: `dev` `1.0.3` not deployed\n")
    assert "| result | `the agent could not be reached` |" in summary
    assert "| exit code | 3 |" in summary
    assert "cannot reach the agent at http://127.0.0.1:9" in summary


def test_github_401_apply_says_what_was_refused_and_why(
    cli: Cli, workspace: Path, tmp_path: Path, served: tuple[Api, str]
) -> None:
    _, url = served
    result = cli.run(
        *APPLY, cwd=workspace, env=github_env(tmp_path, DEPLOY_AGENT_URL=url, DEPLOY_AGENT_TOKEN="nope" * 8)
    )
    assert result.returncode == 3
    assert "::error::deploy of dev 1.0.3: refused by the agent (401 unauthorized): " in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "| result | `refused by the agent (401 unauthorized)` |" in summary
    shown = [line for line in result.stdout.splitlines() if not line.startswith("::add-mask::")]
    assert "canary-secret-value" not in summary + "\n".join(shown) + result.stderr


def test_github_invalid_apply_exit_2_writes_a_summary_whose_text_cannot_draw(
    cli: Cli, workspace: Path, tmp_path: Path
) -> None:
    tag = "<img src=x>[a](http://e)"
    result = cli.run(
        "apply", "plans/runtime.yaml", "--env", "dev", "--tag", tag, "--agent", "http://127.0.0.1:9",
        cwd=workspace, env=github_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert "::error::deploy of dev <img src=x>[a](http://e): invalid input: nothing was sent" in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    # As inline code and in <pre>, escaped: no image, no link drawn.
    assert "`<img src=x>[a](http://e)`" in summary
    outside_code = re.sub(r"`[^`\n]*`|<pre>.*?</pre>", "", summary, flags=re.S)  # no markdown inside either
    assert "<img" not in outside_code and "](http" not in outside_code, outside_code
    assert "| exit code | 2 |" in summary


def test_outside_github_a_refusal_writes_no_summary(cli: Cli, workspace: Path, tmp_path: Path) -> None:
    env = {**RUNTIME_ENV, "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "DEPLOY_AGENT_URL": "http://127.0.0.1:9"}
    assert cli.run(*APPLY, cwd=workspace, env=env).returncode == 3
    assert not (tmp_path / "summary.md").exists()


# -- follow


@pytest.fixture
def history(make_api: Callable[..., Api], serve: Callable[[Api], str]) -> tuple[Api, str]:
    api = make_api()
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "d1", "dev", "1.0.0", "succeeded")
    record_deployment(log, "d2", "dev", "1.0.1", "failed")
    return api, serve(api)


def agent(url: str) -> dict[str, str]:
    return {"DEPLOY_AGENT_URL": url, "DEPLOY_AGENT_TOKEN": TOKEN}


def test_follow_of_a_failed_deployment_prints_it_as_apply_and_exits_1(
    cli: Cli, tmp_path: Path, history: tuple[Api, str]
) -> None:
    _, url = history
    result = cli.run("follow", "d2", cwd=tmp_path, env=agent(url))
    assert result.returncode == 1, result
    assert result.stdout.startswith("following deployment d2: registry.test/acme/trader/runtime:1.0.1 to dev")
    assert "audit head " in result.stdout
    assert "deploy failed: dev 1.0.1: failed in step verify: exited with code 1" in result.stderr


def test_follow_of_an_unknown_deployment_exits_3(cli: Cli, tmp_path: Path, history: tuple[Api, str]) -> None:
    result = cli.run("follow", "nope", cwd=tmp_path, env=agent(history[1]))
    assert result.returncode == 3 and "the agent refused (404 not_found)" in result.stderr


# -- audit pull and verify --agent


def pull(cli: Cli, url: str, path: Path) -> tuple[int, str, str]:
    result = cli.run("audit", "pull", "-o", str(path), cwd=path.parent, env=agent(url))
    return result.returncode, result.stdout, result.stderr


def test_pull_copies_then_appends_only_what_is_new(cli: Cli, tmp_path: Path, history: tuple[Api, str]) -> None:
    api, url = history
    copy = tmp_path / "copy.jsonl"
    code, out, _ = pull(cli, url, copy)
    server = (api.state_dir / "audit.jsonl").read_bytes()
    assert code == 0 and copy.read_bytes() == server
    assert out.startswith(f"{copy}: {len(server.splitlines())} new record(s) from {url}, ends at ")
    record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d3", "prod", "1.0.2", "succeeded")
    code, out, _ = pull(cli, url, copy)
    assert code == 0 and copy.read_bytes() == (api.state_dir / "audit.jsonl").read_bytes()
    assert f"{copy}: 2 new record(s)" in out
    assert pull(cli, url, copy)[1].startswith(f"{copy}: 0 new record(s)")


def test_pull_refuses_a_copy_whose_last_record_changed_and_names_the_seq(
    cli: Cli, tmp_path: Path, history: tuple[Api, str]
) -> None:
    _, url = history
    copy = tmp_path / "copy.jsonl"
    pull(cli, url, copy)
    lines = copy.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    # Rewritten whole, hash and all, so that the copy's own chain still holds: only the agent can tell.
    copy.write_bytes(b"".join(lines[:-1]) + rechained([last | {"actor": "mallory"}], prev=last["prev"]))
    before = copy.read_bytes()
    code, _, err = pull(cli, url, copy)
    assert code == 1
    assert f"record {last['seq']}, the copy's last, no longer matches the agent's record {last['seq']}" in err
    assert copy.read_bytes() == before


def test_pull_drops_a_torn_tail_of_its_own_and_pulls_that_record_again(
    cli: Cli, tmp_path: Path, history: tuple[Api, str]
) -> None:
    api, url = history
    copy = tmp_path / "copy.jsonl"
    server = (api.state_dir / "audit.jsonl").read_bytes()
    copy.write_bytes(server[: len(server) - 20])  # a pull cut in the middle of its last line
    code, _, err = pull(cli, url, copy)
    assert code == 0 and copy.read_bytes() == server
    assert "dropped a torn last line" in err


def test_verify_with_the_agent_takes_its_history_heads_as_anchors(
    cli: Cli, tmp_path: Path, history: tuple[Api, str]
) -> None:
    _api, url = history
    copy = tmp_path / "copy.jsonl"
    pull(cli, url, copy)
    result = cli.run("audit", "verify", str(copy), "--agent", url, cwd=tmp_path, env=agent(url))
    assert result.returncode == 0, result
    assert "2 anchor(s) match" in result.stdout
    assert "2 audit head(s) from the agent's history as anchors" in result.stderr
    # A copy that the agent's heads contradict: rewritten whole from a record one of them anchors.
    lines = copy.read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    records[1]["actor"] = "mallory"
    copy.write_bytes(lines[0] + rechained(records[1:], prev=records[0]["hash"]))
    alone = cli.run("audit", "verify", str(copy), cwd=tmp_path)
    against = cli.run("audit", "verify", str(copy), "--agent", url, cwd=tmp_path, env=agent(url))
    assert alone.returncode == 0
    assert against.returncode == 1 and "does not match" in against.stderr


def test_verify_with_a_copy_older_than_the_agent_checks_what_it_reaches(
    cli: Cli, tmp_path: Path, history: tuple[Api, str]
) -> None:
    api, url = history
    copy = tmp_path / "copy.jsonl"
    pull(cli, url, copy)
    record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d3", "prod", "1.0.2", "succeeded")
    result = cli.run("audit", "verify", str(copy), "--agent", url, cwd=tmp_path, env=agent(url))
    assert result.returncode == 0, result
    assert "1 newer audit head(s) lie beyond the copy's last record" in result.stderr


def test_github_a_deploy_accepted_but_lost_leaves_an_error_and_a_summary(tmp_path: Path) -> None:
    """Every exit path in GitHub mode: one that cannot be followed to its end (exit 1) says so there too."""
    from runner.cli.client import ApiFailure
    from runner.cli.errors import DeployFailed
    from runner.cli.follow import Target
    from runner.cli.watch import watch
    from runner.core.secrets import Masker

    class Gone:
        url = "http://agent.test"

        def deployment(self, deployment_id: str, **wait: object) -> object:
            raise ApiFailure(404, "not_found", f"no deployment {deployment_id!r}", [])

    summary = tmp_path / "summary.md"
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO(), github=True, environ={"GITHUB_STEP_SUMMARY": str(summary)})
    target = Target(environment="dev", tag="1.0.3", image="r/runtime:1.0.3")
    with pytest.raises(DeployFailed, match="was accepted but cannot be followed"):
        watch(console, Gone(), "abc", target=target, masker=Masker(()), seconds=5)  # type: ignore[arg-type]
    assert out.getvalue().startswith("::error::deploy of dev 1.0.3: accepted, but its outcome is unknown here: ")
    text = summary.read_text()
    assert text.startswith("## deployplan: `dev` `1.0.3` outcome unknown\n") and "| exit code | 1 |" in text


def test_apply_and_follow_watch_one_target_type() -> None:
    """follow.py had a `Target` Protocol and watch.py a `Target` dataclass: two types with one name for one idea."""
    import ast

    cli_dir = Path(__file__).resolve().parents[2] / "runner" / "cli"
    defined = [
        path.name
        for path in sorted(cli_dir.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == "Target"
    ]
    assert defined == ["follow.py"]


def test_a_secret_across_two_coloured_pieces_is_still_masked() -> None:
    """Colour splits a step line into pieces; a secret value that spans two of them must not escape the mask."""
    from runner.cli.follow import Printer
    from runner.core.secrets import Masker

    console = Console(out=Tty(), err=io.StringIO(), github=False, environ={})
    out = io.StringIO()
    printer = Printer(out=out, github=False, masker=Masker(["ull: Pull"]), style=console.style)
    step = {"action": "pull", "name": "Pull the image", "state": "running", "started_at": None, "finished_at": None}
    printer.steps({"steps": [step]})  # type: ignore[typeddict-item]
    assert out.getvalue() == "[1/1] p**** the image ...\n"
    plain = Printer(out=io.StringIO(), github=False, masker=Masker(["secret-value"]), style=console.style)
    plain.steps({"steps": [step]})  # type: ignore[typeddict-item]
    assert "\033[1mpull\033[0m" in plain.out.getvalue()  # type: ignore[attr-defined]


def test_pull_follows_the_pages_until_the_agent_says_no_more(
    cli: Cli, tmp_path: Path, history: tuple[Api, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.reads

    monkeypatch.setattr(agent.reads, "AUDIT_PAGE", 2)
    api, url = history
    copy = tmp_path / "copy.jsonl"
    code, out, _ = pull(cli, url, copy)
    server = (api.state_dir / "audit.jsonl").read_bytes()
    assert code == 0 and copy.read_bytes() == server and len(server.splitlines()) > 2
    assert out.startswith(f"{copy}: {len(server.splitlines())} new record(s)")


def test_pull_asks_for_the_page_after_its_last_record_once(tmp_path: Path) -> None:
    """The page that proves the copy's last record is the agent's also holds what follows it: not asked twice."""
    from runner.cli.auditcopy import pull

    log = AuditLog(tmp_path / "audit.jsonl")
    record_deployment(log, "d1", "dev", "1.0.0", "succeeded")
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(b"".join(lines[:2]))

    class Agent:
        url, asked = "http://agent.test", []  # type: str, list[int]

        def get(self, path: str, *, after: int) -> dict[str, object]:
            self.asked.append(after)
            return {"records": [r for r in records if r["seq"] > after], "more": False}

    agent = Agent()
    pulled = pull(agent, copy)  # type: ignore[arg-type]
    assert agent.asked == [1]
    assert pulled.added == len(records) - 2 and copy.read_bytes() == b"".join(lines)


def test_follow_waits_as_long_as_the_longest_plan_the_schema_allows() -> None:
    from conftest import plan
    from runner.cli.follow import deadline_seconds, longest_deadline
    from runner.core.plan import Plan, check_plan
    from runner.core.schema import validator

    longest = plan()
    longest["steps"][0]["timeout"], longest["steps"][1]["stop_timeout"] = 3600, 300
    longest["steps"][3]["timeout"] = 600
    assert check_plan(longest, source="test") == []
    assert deadline_seconds(Plan(source="test", data=longest)) == longest_deadline()
    longest["steps"][3]["timeout"] = 601  # beyond the schema: the longest is the schema's
    assert not validator("plan.schema.json").is_valid(longest)
