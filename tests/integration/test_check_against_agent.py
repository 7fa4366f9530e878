"""`deployplan check`, the installed CLI against the real agent (cloudflare-access, behind Access's edge played on
loopback), the real registry, and GitHub's API played on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from accessedge import AccessEdge
from accesskeys import TEAM, Issuer, Jwks, Key
from githubfake import TOKEN, FakeGitHub, Repository
from githuboidc import AUDIENCE, REPOSITORY_ID, TokenRequests, agent_settings, github_issuer, job_token
from realparts import Agent, Cli, Images, agent_factory

GOOD = f"{secrets.token_hex(16)}.access"  # listed in DEPLOY_AGENT_DEPLOYERS_DEV
TYPO = f"{secrets.token_hex(16)}.access"  # listed with a typo: its last character changed
SECRETS = {GOOD: secrets.token_hex(32), TYPO: secrets.token_hex(32)}
RUNTIME_SECRET = f"check-canary-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Setup:
    agent: Agent
    edge: AccessEdge
    workspace: Path
    repository: str

    def env(self, client_id: str = GOOD, **changes: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "DEPLOY_AGENT_URL": self.edge.url,
            "CF_ACCESS_CLIENT_ID": client_id,
            "CF_ACCESS_CLIENT_SECRET": SECRETS[client_id],
            "GITHUB_REPOSITORY": self.repository,
            "RUNTIME_ENV": "dev",
            "RUNTIME_LOG_LEVEL": "info",
            "RUNTIME_API_TOKEN": RUNTIME_SECRET,
            **changes,
        }
        return {k: v for k, v in values.items() if v is not None}


def _workspace(base: Path, images: Images) -> tuple[Path, str]:
    """The repository's plan, table and workflow, the plan's image moved to the lab's repository
    <registry>/<prefix>/runtime (so {{ repository }} is <prefix>/runtime)."""
    workspace = base / "ws"
    registry, repository = images.repository.split("/", 1)
    for source in ("plans/runtime.yaml", "infra/ENV_SCHEMA.md", ".github/workflows/deploy.yml"):
        target = workspace / source
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (Path(__file__).resolve().parents[2] / source).read_text()
        target.write_text(text.replace("ghcr.io/{{ repository }}/runtime:", f"{registry}/{{{{ repository }}}}:"))
    return workspace, repository


def _access(jwks: Jwks, aud: str) -> dict[str, str]:
    return {
        "DEPLOY_AGENT_AUTH": "cloudflare-access",
        "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": TEAM,
        "DEPLOY_AGENT_ACCESS_AUD": aud,
        "DEPLOY_AGENT_ACCESS_CERTS_URL": jwks.url,
    }


@pytest.fixture(scope="module")
def setup(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """One agent in cloudflare-access mode whose dev deployers are GOOD and a mistyped TYPO, behind the edge."""
    key, aud = Key.new(), secrets.token_hex(32)
    jwks = Jwks()
    jwks.serve(key)
    base = tmp_path_factory.mktemp("check")
    workspace, repository = _workspace(base, images)
    extra = {
        **_access(jwks, aud),
        "DEPLOY_AGENT_DEPLOYERS_DEV": f"{GOOD},{TYPO[:-1]}x",
        "DEPLOY_AGENT_DEPLOYERS_PROD": GOOD,
    }
    with agent_factory(cli, images, docker_client, base) as start:
        agent = start(extra_env=extra)
        edge = AccessEdge(agent.url, key=key, issuer=Issuer(aud=aud), tokens=SECRETS)
        try:
            yield Setup(agent=agent, edge=edge, workspace=workspace, repository=repository)
        finally:
            edge.close()
            jwks.close()


def check(cli: Cli, setup: Setup, *args: str, env: dict[str, str]) -> tuple[int, str]:
    result = cli.run("check", *args, cwd=setup.workspace, env=env)
    print(result.stdout + result.stderr)  # the report, kept in the test's output
    return result.returncode, result.stdout + result.stderr


def test_a_good_setup(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", "--tag", "1.0.0", env=setup.env())
    assert code == 0, out
    for line in (
        f"ok    identity: the agent knows this caller as '{GOOD}'",
        f"ok    may deploy: '{GOOD}' may deploy dev",
        "ok    serves: the agent serves dev",
        "ok    docker: the agent reaches its Docker Engine",
        "ok    audit: the audit chain is intact",
        "ok    registry: the registry has ",
        "ok    dry run: the agent accepts the plan for dev, and this caller may deploy it",
        "ok    variable RUNTIME_API_TOKEN: set (secret), passes its rule",
    ):
        assert line in out
    assert " GiB free on the agent's state directory" in out  # reported by /v1/status
    assert RUNTIME_SECRET not in out
    assert setup.agent.audit() == [] or all(r["event"] != "deployment_started" for r in setup.agent.audit())


def test_a_deployer_typo(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", env=setup.env(TYPO))
    assert code == 1, out
    assert f"FAIL  may deploy: '{TYPO}' may not deploy dev" in out
    assert f"change: add '{TYPO}' (the service token's common name, exactly) to DEPLOY_AGENT_DEPLOYERS_DEV" in out


def test_an_empty_secret(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", env=setup.env(RUNTIME_API_TOKEN=""))
    assert code == 1, out
    assert (
        "FAIL  variable RUNTIME_API_TOKEN: required and set to the empty string "
        "(an empty GitHub secret arrives as an empty string)" in out
    )


def test_a_missing_tag(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", "--tag", "9.9.9", env=setup.env())
    assert code == 1, out
    assert "FAIL  registry: the server cannot pull " in out
    assert ":9.9.9: " in out


def test_only_one_of_the_two_access_variables(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", env=setup.env(CF_ACCESS_CLIENT_SECRET=""))
    assert code == 1, out
    assert "FAIL  access token: CF_ACCESS_CLIENT_ID is set but CF_ACCESS_CLIENT_SECRET is empty" in out
    assert "warn  agent: not asked: the Access token above is incomplete" in out


def test_a_service_token_access_does_not_accept(cli: Cli, setup: Setup) -> None:
    code, out = check(cli, setup, "--env", "dev", env=setup.env(CF_ACCESS_CLIENT_SECRET="f" * 64))
    assert code == 1, out
    assert "FAIL  agent: Access did not accept the service token: " in out
    assert "f" * 64 not in out


def test_a_github_setup_without_a_prod_reviewer(cli: Cli, setup: Setup) -> None:
    repository = Repository()
    repository.environments["prod"]["protection_rules"] = []
    fake = FakeGitHub(repository, owner_repo=setup.repository)
    try:
        env = setup.env(GH_TOKEN=TOKEN, GITHUB_API_URL=fake.url)
        code, out = check(cli, setup, "--env", "dev", "--github", env=env)
    finally:
        fake.close()
    assert code == 1, out
    assert "FAIL  prod reviewers: prod has no required reviewer: any deploy job runs at once" in out
    assert TOKEN not in out


# -- an agent that requires the deploy job's GitHub OIDC token, and a job in GitHub Actions


@contextmanager
def _oidc_agent(
    cli: Cli, images: Images, docker_client: docker.DockerClient, base: Path, **settings: str
) -> Iterator[tuple[Setup, TokenRequests]]:
    """An agent requiring the deploy job's token (its DEPLOY_AGENT_GITHUB_* changed by `settings`), behind the
    edge, and GitHub's token service minting the job's real claims."""
    key, aud = Key.new(), secrets.token_hex(32)
    jwks = Jwks()
    jwks.serve(key)  # one local issuer: Access's keys and GitHub's
    tokens = TokenRequests(mint=job_token(github_issuer(jwks), key))
    workspace, repository = _workspace(base, images)
    extra = {**_access(jwks, aud), **agent_settings(jwks), "DEPLOY_AGENT_DEPLOYERS_DEV": GOOD, **settings}
    extra["DEPLOY_AGENT_DEPLOYERS_PROD"] = GOOD
    with agent_factory(cli, images, docker_client, base) as start:
        agent = start(extra_env=extra)
        edge = AccessEdge(agent.url, key=key, issuer=Issuer(aud=aud), tokens=SECRETS)
        try:
            yield Setup(agent=agent, edge=edge, workspace=workspace, repository=repository), tokens
        finally:
            edge.close()
            tokens.close()
            jwks.close()


@pytest.fixture(scope="module")
def oidc_setup(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, TokenRequests]]:
    with _oidc_agent(cli, images, docker_client, tmp_path_factory.mktemp("check-oidc")) as setup:
        yield setup


def in_actions(setup: Setup, tokens: TokenRequests, summary: Path, **changes: str | None) -> dict[str, str]:
    env = {**setup.env(**changes), "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    return {**env, **tokens.environ()}


def test_in_the_deploy_job_with_oidc(cli: Cli, oidc_setup: tuple[Setup, TokenRequests], tmp_path: Path) -> None:
    setup, tokens = oidc_setup
    summary = tmp_path / "summary.md"
    env = in_actions(setup, tokens, summary, DEPLOY_OIDC_AUDIENCE=AUDIENCE)
    asked = len(tokens.asked)
    code, out = check(cli, setup, "--env", "dev", "--tag", "1.0.1", env=env)
    assert code == 0, out
    assert f"ok    oidc token: GitHub gives this job a token for '{AUDIENCE}' (sent with the dry run below" in out
    assert "ok    dry run: the agent accepts the plan for dev, and this caller may deploy it" in out
    assert [a["audience"] for a in tokens.asked[asked:]] == [AUDIENCE]
    assert f"::add-mask::{RUNTIME_SECRET}" in out and out.count(RUNTIME_SECRET) == 1
    (token,) = [m.removeprefix("::add-mask::") for m in out.splitlines() if m.startswith("::add-mask::ey")]
    assert out.count(token) == 1  # its mask line only
    assert "::error::" not in out
    text = summary.read_text()
    assert text.startswith("## deployplan check: dev\n")
    assert "| ok | oidc token | `GitHub gives this job a token for" in text
    assert not [r for r in setup.agent.audit() if r["event"].startswith("deploy")]  # nothing was deployed


def test_in_the_deploy_job_without_the_audience(
    cli: Cli, oidc_setup: tuple[Setup, TokenRequests], tmp_path: Path
) -> None:
    setup, tokens = oidc_setup
    summary = tmp_path / "summary.md"
    code, out = check(cli, setup, "--env", "dev", env=in_actions(setup, tokens, summary))
    assert code == 1, out
    assert "FAIL  oidc: the agent requires a GitHub OIDC token on every deploy, and DEPLOY_OIDC_AUDIENCE" in out
    assert "::error::check oidc: the agent requires a GitHub OIDC token" in out
    assert "| **FAIL** | oidc | `the agent requires a GitHub OIDC token" in summary.read_text()


def test_in_the_deploy_job_a_server_repository_id_one_digit_off(
    cli: Cli,
    images: Images,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    """The server's DEPLOY_AGENT_GITHUB_REPOSITORY_ID has a typo: check used to say ready (it read the token's
    audience only), and apply got 403. The dry run now carries the token, and the agent says which setting."""
    off = REPOSITORY_ID[:-1] + str((int(REPOSITORY_ID[-1]) + 1) % 10)
    base = tmp_path_factory.mktemp("check-oidc-typo")
    with _oidc_agent(cli, images, docker_client, base, DEPLOY_AGENT_GITHUB_REPOSITORY_ID=off) as (setup, tokens):
        summary = tmp_path / "summary.md"
        env = in_actions(setup, tokens, summary, DEPLOY_OIDC_AUDIENCE=AUDIENCE)
        code, out = check(cli, setup, "--env", "dev", "--tag", "1.0.1", env=env)
        audit = setup.agent.audit()
    assert code == 1, out
    assert (
        "FAIL  dry run: the agent would refuse this deploy job's GitHub OIDC token (a deploy would get 403): the "
        f"GitHub OIDC token does not allow this deploy: repository_id is '{REPOSITORY_ID}', expected '{off}' "
        "(DEPLOY_AGENT_GITHUB_REPOSITORY_ID"
    ) in out
    assert "change: set DEPLOY_AGENT_GITHUB_REPOSITORY_ID to this repository's id" in out
    assert "::error::check dry run: the agent would refuse this deploy job's GitHub OIDC token" in out
    assert "| **FAIL** | dry run |" in summary.read_text()
    (token,) = [m.removeprefix("::add-mask::") for m in out.splitlines() if m.startswith("::add-mask::ey")]
    assert out.count(token) == 1 and token not in summary.read_text()
    assert not [r for r in audit if r["event"].startswith("deploy")]  # nothing deployed, no refusal recorded
