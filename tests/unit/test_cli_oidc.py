"""`deployplan apply` with DEPLOY_OIDC_AUDIENCE, in-process: the job's token is asked for at GitHub's token
endpoint (a local one), masked, sent as X-GitHub-OIDC-Token, and never printed; without id-token: write it exits 2
before anything is sent."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accesskeys import Jwks, Key
from agent.auditlog import AuditLog
from agent.config import GithubOidc
from agent.errors import Forbidden, Unauthorized
from agent.jwks import JwksCache
from agent.oidc import GithubOidcVerifier
from conftest import RUNTIME_ENV, Api, InProcessCli, record_deployment
from fakedocker import FakeContainer, FakeDocker
from githuboidc import (
    AUDIENCE,
    MAIN,
    REPOSITORY_ID,
    WORKFLOW,
    GithubIssuer,
    TokenRequests,
    agent_settings,
    job_token,
)
from runner.cli.oidc import what_to_change

REPO = Path(__file__).resolve().parents[2]
IMAGES = "ghcr.io/acme/trader/runtime"
APPLY = ("apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", tmp_path / "infra")
    shutil.copytree(REPO / "plans", tmp_path / "plans")
    return tmp_path


@pytest.fixture
def agent(
    make_api: Callable[..., Api], serve: Callable[[Api], str], issuer: tuple[Jwks, Key, GithubIssuer]
) -> tuple[Api, str]:
    """An agent requiring the token; Docker "gone", so an accepted token meets the 503 and nothing runs."""
    api = make_api(
        docker=FakeDocker(reachable=False), DEPLOY_AGENT_IMAGE_REPOSITORY=IMAGES, **agent_settings(issuer[0])
    )
    return api, serve(api)


@pytest.fixture
def token_service(issuer: tuple[Jwks, Key, GithubIssuer]) -> Iterator[TokenRequests]:
    _, key, minted = issuer
    service = TokenRequests(mint=job_token(minted, key))
    yield service
    service.close()


def environ(url: str, **extra: str) -> dict[str, str]:
    return {**RUNTIME_ENV, "DEPLOY_AGENT_URL": url, "DEPLOY_AGENT_TOKEN": "unit-test-token-" + "x" * 24, **extra}


def test_without_id_token_write_apply_exits_2_before_anything_is_sent(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str]
) -> None:
    api, url = agent
    result = cli.run(*APPLY, cwd=workspace, env=environ(url, DEPLOY_OIDC_AUDIENCE=AUDIENCE, GITHUB_ACTIONS="true"))
    assert result.returncode == 2, result.stderr
    assert "needs `permissions: id-token: write`" in result.stderr and "nothing was sent" in result.stderr
    assert "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not" in result.stderr
    assert api.audit() == []


def test_apply_sends_the_jobs_token_masked_and_never_printed(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests
) -> None:
    api, url = agent
    env = environ(url, DEPLOY_OIDC_AUDIENCE=AUDIENCE, GITHUB_ACTIONS="true", **token_service.environ())
    result = cli.run(*APPLY, cwd=workspace, env=env)
    # The agent took the token (no refusal) and stopped at the next check: Docker is gone here.
    assert result.returncode == 3 and "docker_unavailable" in result.stderr, result.stdout + result.stderr
    assert [r["event"] for r in api.audit()] == []
    (asked,) = token_service.asked
    assert asked == {"audience": AUDIENCE, "authorization": f"bearer {token_service.request_token}"}
    masks = [line for line in result.stdout.splitlines() if line.startswith("::add-mask::")]
    (token,) = [m.removeprefix("::add-mask::") for m in masks if m.count(".") == 2]
    assert result.stdout.index(f"::add-mask::{token}") < result.stdout.index("deploying ")
    rest = (result.stdout + result.stderr).replace(f"::add-mask::{token}", "")
    assert token not in rest and token.split(".")[2] not in rest
    assert token_service.request_token not in result.stdout + result.stderr


def test_a_token_for_another_audience_is_refused_by_the_agent(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests
) -> None:
    api, url = agent
    env = environ(url, DEPLOY_OIDC_AUDIENCE="https://elsewhere.example.test", **token_service.environ())
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 3
    assert "the agent refused (401 unauthorized): the GitHub OIDC token's aud is not" in result.stderr
    assert [r["event"] for r in api.audit()] == ["deploy_refused"]


@pytest.mark.parametrize("fault", ["wrong-request-token", "service-down"])
def test_no_token_from_github_exits_3_and_sends_nothing(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests, fault: str
) -> None:
    api, url = agent
    env = environ(url, DEPLOY_OIDC_AUDIENCE=AUDIENCE, **token_service.environ())
    if fault == "wrong-request-token":
        env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "not-the-request-token"
    else:
        token_service.status = 503
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 3
    code = "401" if fault == "wrong-request-token" else "503"
    assert f"ACTIONS_ID_TOKEN_REQUEST_URL (GitHub's OIDC token service) answered HTTP {code}" in result.stderr
    assert "nothing was sent to the agent" in result.stderr
    assert api.audit() == [] and "not-the-request-token" not in result.stderr


def test_an_unreachable_token_service_exits_3_and_sends_nothing(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests
) -> None:
    api, url = agent
    env = environ(url, DEPLOY_OIDC_AUDIENCE=AUDIENCE, **token_service.environ())
    env["ACTIONS_ID_TOKEN_REQUEST_URL"] = "http://127.0.0.1:9/_apis/idtoken?api-version=2.0"
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 3, result.stderr
    assert "(GitHub's OIDC token service) is unreachable" in result.stderr and "nothing was sent" in result.stderr
    assert api.audit() == [] and token_service.request_token not in result.stderr


def test_in_github_a_token_service_that_fails_is_named_as_github_not_the_agent(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests, tmp_path: Path
) -> None:
    """The job summary's headline sends the operator to GitHub's token service, not to the tunnel and the agent,
    which was never asked."""
    api, url = agent
    token_service.status = 500
    summary = tmp_path / "summary.md"
    env = environ(
        url,
        DEPLOY_OIDC_AUDIENCE=AUDIENCE,
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(summary),
        **token_service.environ(),
    )
    result = cli.run(*APPLY, cwd=workspace, env=env)
    assert result.returncode == 3
    headline = "GitHub did not give the job its OIDC token: nothing was sent"
    assert f"::error::deploy of dev 1.0.3: {headline}: ACTIONS_ID_TOKEN_REQUEST_URL" in result.stdout
    text = summary.read_text()
    assert f"| result | `{headline}` |" in text and "| exit code | 3 |" in text
    assert "could not be reached" not in result.stdout + text
    assert api.audit() == []


# -- `deployplan check` reads DEPLOY_OIDC_AUDIENCE as apply does

CHECK = ("check", "--env", "dev", "--repository", "acme/trader", "--json")


def check_lines(result: Any) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.mark.parametrize("blank", [" ", "\t \t"])
def test_a_blank_audience_is_unset_for_check_as_for_apply(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str], token_service: TokenRequests, blank: str
) -> None:
    """A repository variable set to blanks: apply sends no token (and the agent answers 401), so check, which
    used to ask GitHub for a token for ' ' and say ok, says that the agent requires one and none is set."""
    _, url = agent
    env = environ(url, DEPLOY_OIDC_AUDIENCE=blank, GITHUB_ACTIONS="true", **token_service.environ())
    result = cli.run(*CHECK, cwd=workspace, env=env)
    assert result.returncode == 1
    line = check_lines(result)["oidc"]
    assert line["level"] == "FAIL" and "DEPLOY_OIDC_AUDIENCE is not set here" in line["reason"], line
    assert "oidc token" not in check_lines(result)
    assert token_service.asked == []


def test_check_in_a_job_without_id_token_write_fails_where_apply_would_exit_2(
    cli: InProcessCli, workspace: Path, agent: tuple[Api, str]
) -> None:
    _, url = agent
    result = cli.run(
        *CHECK, cwd=workspace, env=environ(url, DEPLOY_OIDC_AUDIENCE=f" {AUDIENCE} ", GITHUB_ACTIONS="true")
    )
    line = check_lines(result)["oidc token"]
    assert line["level"] == "FAIL" and "`permissions: id-token: write`" in line["fix"], line


# -- the dry run carries the job's token, so the agent judges it before apply sends it

DRY_RUN = ("dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")
CHECK_TEXT = ("check", "--env", "dev", "--repository", "acme/trader")
ONE_DIGIT_OFF = REPOSITORY_ID[:-1] + str((int(REPOSITORY_ID[-1]) + 1) % 10)


def judging_agent(make_api: Callable[..., Api], jwks: Jwks, **settings: str) -> Api:
    """An agent requiring the token, whose registry has 1.0.3: its dry run answers in full."""
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", f"{IMAGES}:1.0.2"))
    docker.registry[f"{IMAGES}:1.0.3"] = "sha256:" + "a" * 64
    return make_api(docker=docker, DEPLOY_AGENT_IMAGE_REPOSITORY=IMAGES, **{**agent_settings(jwks), **settings})


def in_the_job(url: str, tokens: TokenRequests, tmp_path: Path) -> dict[str, str]:
    return environ(
        url,
        DEPLOY_OIDC_AUDIENCE=AUDIENCE,
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
        **tokens.environ(),
    )


@dataclass
class Job:
    """An agent that judges the deploy job's token (DEPLOY_AGENT_GITHUB_* with these changes), served, and the
    environment of a deploy job in GitHub Actions that talks to it."""

    api: Api
    url: str
    env: dict[str, str]


@pytest.fixture
def job(
    make_api: Callable[..., Api],
    serve: Callable[[Api], str],
    issuer: tuple[Jwks, Key, GithubIssuer],
    token_service: TokenRequests,
    tmp_path: Path,
) -> Callable[..., Job]:
    def make(**settings: str) -> Job:
        api = judging_agent(make_api, issuer[0], **settings)
        url = serve(api)
        return Job(api, url, in_the_job(url, token_service, tmp_path))

    return make


def the_token(result: Any) -> str:
    """The job's token, from its mask line; it must appear nowhere else."""
    (token,) = [
        m.removeprefix("::add-mask::")
        for m in result.stdout.splitlines()
        if m.count(".") == 2 and m.startswith("::add-mask::")
    ]
    rest = (result.stdout + result.stderr).replace(f"::add-mask::{token}", "")
    assert token not in rest and token.split(".")[2] not in rest
    return token


def test_check_fails_a_token_the_deploy_would_have_403_naming_the_servers_variable(
    cli: InProcessCli, workspace: Path, job: Callable[..., Job]
) -> None:
    """The server's DEPLOY_AGENT_GITHUB_REPOSITORY_ID is one digit off. check used to read the token's audience
    only and say ready; apply then got 403 after the reviewers approved."""
    refusing = job(DEPLOY_AGENT_GITHUB_REPOSITORY_ID=ONE_DIGIT_OFF)
    result = cli.run(*CHECK_TEXT, "--tag", "1.0.3", cwd=workspace, env=refusing.env)
    assert result.returncode == 1, result.stdout
    assert (
        "FAIL  dry run: the agent would refuse this deploy job's GitHub OIDC token (a deploy would get 403): "
        f"the GitHub OIDC token does not allow this deploy: repository_id is '{REPOSITORY_ID}', expected "
        f"'{ONE_DIGIT_OFF}' (DEPLOY_AGENT_GITHUB_REPOSITORY_ID"
    ) in result.stdout
    assert "change: set DEPLOY_AGENT_GITHUB_REPOSITORY_ID to this repository's id" in result.stdout
    assert (
        f"ok    oidc token: GitHub gives this job a token for '{AUDIENCE}' (sent with the dry run below"
        in result.stdout
    )
    assert "::error::check dry run: the agent would refuse this deploy job's GitHub OIDC token" in result.stdout
    token = the_token(result)
    assert result.stdout.index(f"::add-mask::{token}") < result.stdout.index("ok    ")
    assert refusing.api.audit() == []  # a dry run: nothing deployed, no refusal recorded, the token not used up


def test_check_passes_a_token_the_agent_accepts(cli: InProcessCli, workspace: Path, job: Callable[..., Job]) -> None:
    result = cli.run(*CHECK_TEXT, "--tag", "1.0.3", cwd=workspace, env=job().env)
    assert result.returncode == 0, result.stdout
    assert "ok    dry run: the agent accepts the plan for dev, and this caller may deploy it" in result.stdout
    the_token(result)


def test_check_without_a_tag_says_the_token_was_not_judged(
    cli: InProcessCli, workspace: Path, job: Callable[..., Job]
) -> None:
    result = cli.run(*CHECK_TEXT, cwd=workspace, env=job().env)
    assert f"token for '{AUDIENCE}' (not sent: give --tag and the agent judges it)" in result.stdout


def test_dry_run_in_the_job_carries_the_token_and_exits_3_with_the_agents_reason(
    cli: InProcessCli, workspace: Path, job: Callable[..., Job]
) -> None:
    refusing = job(DEPLOY_AGENT_GITHUB_REPOSITORY_ID=ONE_DIGIT_OFF)
    result = cli.run(*DRY_RUN, "--agent", refusing.url, cwd=workspace, env=refusing.env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"with the deploy job's GitHub OIDC token for {AUDIENCE}" in result.stdout
    assert "may deploy      NO (this caller, to dev)" in result.stdout
    assert f"repository_id is '{REPOSITORY_ID}', expected '{ONE_DIGIT_OFF}'" in result.stdout
    assert "the agent would refuse the deploy job's GitHub OIDC token: " in result.stderr
    assert "(change: set DEPLOY_AGENT_GITHUB_REPOSITORY_ID to this repository's id" in result.stderr
    the_token(result)
    assert refusing.api.audit() == []


def test_dry_run_outside_github_actions_asks_for_no_token_and_says_so(
    cli: InProcessCli,
    workspace: Path,
    make_api: Callable[..., Api],
    serve: Callable[[Api], str],
    issuer: tuple[Jwks, Key, GithubIssuer],
    token_service: TokenRequests,
) -> None:
    url = serve(judging_agent(make_api, issuer[0]))
    env = environ(url, DEPLOY_OIDC_AUDIENCE=AUDIENCE, **token_service.environ())
    result = cli.run(*DRY_RUN, "--agent", url, cwd=workspace, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "only a GitHub Actions job can ask for its OIDC token: the agent judges this identity only" in result.stderr
    assert token_service.asked == []


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        (
            {"repository": "acme/other", "workflow_ref": f"acme/other/{WORKFLOW}@{MAIN}"},
            "set DEPLOY_AGENT_GITHUB_REPOSITORY to",
        ),
        ({"repository_id": ONE_DIGIT_OFF}, "set DEPLOY_AGENT_GITHUB_REPOSITORY_ID to"),
        ({"event_name": "push"}, "by hand (workflow_dispatch)"),
        ({"environment": "prod"}, "in the GitHub Environment named like the target"),
        (
            {"ref": "refs/heads/feature", "workflow_ref": f"acme/trader/{WORKFLOW}@refs/heads/feature"},
            "DEPLOY_AGENT_GITHUB_REFS",
        ),
        ({"workflow_ref": f"acme/trader/.github/workflows/other.yml@{MAIN}"}, "set DEPLOY_AGENT_GITHUB_WORKFLOW"),
        ({"aud": "https://elsewhere.example.test"}, "DEPLOY_OIDC_AUDIENCE and DEPLOY_AGENT_GITHUB_AUDIENCE"),
        ({"iss": "https://elsewhere.example.test"}, "set DEPLOY_AGENT_GITHUB_ISSUER"),
        ({"exp": int(time.time()) - 600}, "synchronise the server's clock"),
    ],
)
def test_what_to_change_for_each_reason_the_agent_gives(
    issuer: tuple[Jwks, Key, GithubIssuer], claims: dict[str, Any], named: str
) -> None:
    """Read from the agent's own words for each refused claim: the fix names the setting."""
    jwks, key, minted = issuer
    settings = GithubOidc(
        issuer=jwks.issuer,
        audience=AUDIENCE,
        repository="acme/trader",
        repository_id=REPOSITORY_ID,
        workflow=WORKFLOW,
        refs=(MAIN,),
    )
    verifier = GithubOidcVerifier(settings, JwksCache.discovered(jwks.issuer, name="GitHub OIDC keys"))
    with pytest.raises((Unauthorized, Forbidden)) as refused:
        verifier.verify(minted.sign(key, minted.claims(**claims)), environment="dev")
    assert named in what_to_change(refused.value.message), refused.value.message


def test_what_to_change_for_a_reused_token_and_an_unknown_reason() -> None:
    reused = "the GitHub OIDC token does not allow this deploy: jti is 'x', expected a token never accepted before"
    assert what_to_change(reused).startswith("start a new workflow run")
    assert "DEPLOY_AGENT_GITHUB_*" in what_to_change("something new")


# -- where a deploy came from: verified or claimed, in history and on the page

VERIFIED = {
    "run_url": "https://github.com/acme/trader/actions/runs/4242/attempts/2",
    "actor": "octocat",
    "repository": "acme/trader",
    "sha": "c0ffee" + "0" * 34,
    "ref": "refs/heads/main",
    "workflow": "acme/trader/.github/workflows/deploy.yml@refs/heads/main",
    "verified": True,
}


@pytest.fixture
def origins(make_api: Callable[..., Api]) -> Api:
    api = make_api()
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "v1", "dev", "1.0.0", "succeeded", origin=VERIFIED)
    record_deployment(log, "c1", "dev", "1.0.1", "succeeded", origin={"actor": "mallory", "verified": False})
    record_deployment(log, "o1", "dev", "1.0.2", "succeeded", origin={"actor": "old-record"})  # before `verified`
    return api


def test_history_marks_a_verified_origin_with_its_run_and_a_claimed_one_as_claimed(
    cli: InProcessCli, tmp_path: Path, origins: Api, serve: Callable[[Api], str]
) -> None:
    result = cli.run("history", cwd=tmp_path, env=environ(serve(origins)))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "octocat (verified, run 4242/2)" in rows["v1"]
    assert "mallory (claimed)" in rows["c1"] and "old-record (claimed)" in rows["o1"]


def test_the_page_shows_which_origin_is_verified(origins: Api) -> None:
    index = origins.get("/").get_data(as_text=True)
    assert index.count('class="badge verified"') == 1 and index.count('class="badge claimed"') == 2
    one = origins.get("/deployments/v1").get_data(as_text=True)
    assert 'class="badge verified"' in one and VERIFIED["workflow"] in one
    assert 'class="badge claimed"' in origins.get("/deployments/c1").get_data(as_text=True)
