"""DEPLOY_AGENT_GITHUB_OIDC=required against the real agent under gunicorn: GitHub's OIDC issuer and the job's token
endpoint played on loopback, the deploy sent by the installed `deployplan apply` in GitHub mode."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from accesskeys import Jwks, Key
from githuboidc import (
    AUDIENCE,
    MAIN,
    REPOSITORY,
    WORKFLOW,
    GithubIssuer,
    TokenRequests,
    agent_settings,
    github_issuer,
    job_token,
)
from realparts import PREFIX, REPO, RUNTIME_ENV, Agent, AgentFactory, Cli, Images, plan_data, record

HEADER = "X-GitHub-OIDC-Token"


@dataclass
class Github:
    """The issuer (discovery document, JWKS, its key and a foreign one) and the job's token endpoint."""

    jwks: Jwks
    key: Key
    other: Key
    issuer: GithubIssuer
    tokens: TokenRequests

    def token(self, **claims: Any) -> str:
        return self.issuer.sign(self.key, self.issuer.claims(**claims))


@pytest.fixture(scope="module")
def github() -> Iterator[Github]:
    key, other, jwks = Key.new(), Key.new(), Jwks()
    jwks.serve(key)
    issuer = github_issuer(jwks)
    tokens = TokenRequests(mint=job_token(issuer, key, run_id="4242", run_attempt="2", actor="octocat"))
    yield Github(jwks=jwks, key=key, other=other, issuer=issuer, tokens=tokens)
    tokens.close()
    jwks.close()


@pytest.fixture
def required(make_agent: AgentFactory, github: Github) -> Callable[..., Agent]:
    def start(**options: Any) -> Agent:
        return make_agent(extra_env=agent_settings(github.jwks), **options)

    return start


@pytest.fixture
def workspace(tmp_path: Path, images: Images) -> Path:
    """plans/runtime.yaml rendering to the lab image (`--repository` is the lab path), and the variable table."""
    ws = tmp_path / "ws"
    (ws / "plans").mkdir(parents=True)
    (ws / "infra").mkdir()
    (ws / "infra" / "ENV_SCHEMA.md").write_text((REPO / "infra" / "ENV_SCHEMA.md").read_text())
    registry, _ = images.repository.split("/", 1)
    text = (REPO / "plans" / "runtime.yaml").read_text()
    lab_text = text.replace("ghcr.io/{{ repository }}/runtime:", f"{registry}/{{{{ repository }}}}:")
    assert lab_text != text
    (ws / "plans" / "runtime.yaml").write_text(lab_text.replace("stable_for: 5", "stable_for: 1"))
    return ws


def post(agent: Agent, body: dict[str, Any], token: str | None) -> requests.Response:
    headers = {**agent.headers(), **({HEADER: token} if token is not None else {})}
    response = agent.http.post(agent.url + "/v1/deploy", json=body, headers=headers, timeout=30)
    record(response.text)
    return response


def deploy_body(images: Images, env: str = "dev", tag: str = "1.0.0") -> dict[str, Any]:
    body: dict[str, Any] = {
        "plan": plan_data(images, tag, env=env, stable_for=0),
        "env": {**RUNTIME_ENV, "RUNTIME_ENV": env},
        "public_env": ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"],
        "dry_run": False,
    }
    if env == "prod":
        body["confirm"] = f"prod:{tag}"
    return body


def ours(client: docker.DockerClient, agent: Agent) -> list[str]:
    names = set(agent.containers.values())
    return [c.name or "" for c in client.containers.list(all=True, filters={"name": PREFIX}) if c.name in names]


# -- a deploy through `deployplan apply` in GitHub mode


def test_apply_in_github_mode_deploys_with_the_jobs_token_and_history_shows_the_verified_run(
    required: Callable[..., Agent], github: Github, cli: Cli, workspace: Path, images: Images, tmp_path: Path
) -> None:
    agent = required()
    summary = tmp_path / "summary.md"
    summary.touch()
    repository = images.repository.split("/", 1)[1]
    env = {
        **RUNTIME_ENV,
        "DEPLOY_AGENT_URL": agent.url,
        "DEPLOY_AGENT_TOKEN": agent.token,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        # What the job's own variables claim; the verified origin comes from the token instead.
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "someone/else",
        "GITHUB_RUN_ID": "1",
        "GITHUB_ACTOR": "mallory",
        "DEPLOY_OIDC_AUDIENCE": AUDIENCE,
        **github.tokens.environ(),
    }
    issued = len(github.issuer.issued)
    result = cli.run(
        "apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", "--repository", repository,
        cwd=workspace, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (token,) = github.issuer.issued[issued:]
    assert f"::add-mask::{token}" in result.stdout
    assert (result.stdout + result.stderr).count(token.split(".")[2]) == 1  # its mask line only
    assert "deployed and verified: dev runs" in result.stdout
    assert "for `octocat` (verified by its GitHub OIDC token)" in summary.read_text()

    (listed,) = agent.get("/v1/deployments").json()["deployments"]
    assert listed["origin"] == {
        "run_url": f"https://github.com/{REPOSITORY}/actions/runs/4242/attempts/2",
        "actor": "octocat",
        "repository": REPOSITORY,
        "sha": listed["origin"]["sha"],
        "ref": MAIN,
        "workflow": f"{REPOSITORY}/{WORKFLOW}@{MAIN}",
        "verified": True,
    }
    assert listed["actor"] == "token"  # the authenticated caller stays the actor
    history = cli.run("history", "--agent", agent.url, cwd=workspace, env={"DEPLOY_AGENT_TOKEN": agent.token})
    assert history.returncode == 0, history.stderr
    assert "octocat (verified, run 4242/2)" in history.stdout.splitlines()[1]

    started = next(r for r in agent.audit() if r["event"] == "deployment_started")
    assert started["github_oidc"]["jti"] and started["github_oidc"]["run_id"] == "4242"
    text = (agent.state_dir / "audit.jsonl").read_text() + agent.server.log_text()
    assert token.split(".")[2] not in text and github.tokens.request_token not in text

    # The same token again, to this agent and to one started afresh on the same audit log: refused, untouched.
    before = ours(docker.from_env(), agent)
    again = post(agent, deploy_body(images), token)
    assert again.status_code == 403 and "accepted before" in again.json()["error"]["message"]
    restarted = required(state_dir=agent.state_dir)
    after_restart = post(restarted, deploy_body(images), token)
    assert after_restart.status_code == 403, after_restart.text
    assert "expected a token never accepted before" in after_restart.json()["error"]["message"]
    assert ours(docker.from_env(), agent) == before and ours(docker.from_env(), restarted) == []


def test_one_token_sent_at_once_to_both_workers_is_accepted_once(
    required: Callable[..., Agent], github: Github, images: Images
) -> None:
    """The `jti` is checked under the deploy lock against the audit log, which every worker appends to under
    that lock: however the requests land on the two workers, one deploy is accepted."""
    agent = required()
    token = github.token()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: post(agent, deploy_body(images), token), range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(202) == 1 and set(statuses) <= {202, 403, 409}, [a.text for a in answers]
    (accepted,) = [a for a in answers if a.status_code == 202]
    assert agent.wait(accepted.json()["deployment_id"])["state"] == "succeeded"
    late = post(agent, deploy_body(images), token)
    assert late.status_code == 403 and "accepted before" in late.json()["error"]["message"]
    started = [r for r in agent.audit() if r["event"] == "deployment_started"]
    assert len(started) == 1


# -- the attacks, each against the real agent: status, code, message; audited; nothing touched


def _hs256(g: Github) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": g.key.kid}
    pem = g.key.public_pem()
    return g.issuer.raw(header, g.issuer.claims(), lambda data: hmac.new(pem, data, hashlib.sha256).digest())


def _now(delta: int) -> int:
    return int(time.time()) + delta


FEATURE = "refs/heads/feature/x"
ATTACKS: list[tuple[str, Callable[[Github], str | None], str, int, str]] = [
    ("no token", lambda g: None, "dev", 401, "no X-GitHub-OIDC-Token header"),
    (
        "alg none",
        lambda g: g.issuer.raw({"alg": "none", "typ": "JWT", "kid": g.key.kid}, g.issuer.claims()),
        "dev",
        401,
        "the GitHub OIDC token is signed with none, not RS256",
    ),
    ("HS256 keyed with the public key's PEM", _hs256, "dev", 401, "signed with HS256, not RS256"),
    (
        "a foreign key with a known kid",
        lambda g: g.issuer.sign(g.other, g.issuer.claims(), kid=g.key.kid),
        "dev",
        401,
        "the GitHub OIDC token's signature is not valid",
    ),
    (
        "expired",
        lambda g: g.token(exp=_now(-120), iat=_now(-900), nbf=_now(-900)),
        "dev",
        401,
        "the GitHub OIDC token has expired",
    ),
    ("wrong audience", lambda g: g.token(aud="https://elsewhere.example.com"), "dev", 401, "aud is not"),
    ("wrong issuer", lambda g: g.token(iss="https://token.actions.githubusercontent.com"), "dev", 401, "iss is not"),
    (
        "another repository",
        lambda g: g.token(repository="evil/trader", workflow_ref=f"evil/trader/{WORKFLOW}@{MAIN}"),
        "dev",
        403,
        "repository is 'evil/trader', expected 'acme/trader'",
    ),
    (
        "a re-created repository (same name, other id)",
        lambda g: g.token(repository_id="987654321"),
        "dev",
        403,
        "repository_id is '987654321', expected '734120967'",
    ),
    ("a push event", lambda g: g.token(event_name="push"), "dev", 403, "event_name is 'push'"),
    ("a schedule event", lambda g: g.token(event_name="schedule"), "dev", 403, "event_name is 'schedule'"),
    ("a dev token for prod", lambda g: g.token(environment="dev"), "prod", 403, "environment is 'dev'"),
    ("no environment", lambda g: g.token(environment=None), "dev", 403, "environment is missing"),
    (
        "another workflow",
        lambda g: g.token(workflow_ref=f"{REPOSITORY}/.github/workflows/ci.yml@{MAIN}"),
        "dev",
        403,
        "workflow_ref is 'acme/trader/.github/workflows/ci.yml@refs/heads/main'",
    ),
    (
        "a feature branch",
        lambda g: g.token(ref=FEATURE, workflow_ref=f"{REPOSITORY}/{WORKFLOW}@{FEATURE}"),
        "dev",
        403,
        f"ref is {FEATURE!r}, expected one of refs/heads/main",
    ),
]


@pytest.fixture(scope="module")
def target(cli: Cli, images: Images, github: Github, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    from realparts import agent_factory

    client = docker.from_env()
    try:
        with agent_factory(cli, images, client, tmp_path_factory.mktemp("oidc")) as start:
            yield start(extra_env=agent_settings(github.jwks))
    finally:
        client.close()


@pytest.mark.parametrize(("name", "make", "env", "status", "says"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_an_attack_is_refused_audited_with_its_claims_and_touches_nothing(
    target: Agent, github: Github, images: Images, name: str, make: Callable[[Github], str | None], env: str,
    status: int, says: str,
) -> None:  # fmt: skip
    token = make(github)
    seen = len(target.audit())
    response = post(target, deploy_body(images, env), token)
    error = response.json()["error"]
    assert response.status_code == status, response.text
    assert error["code"] == ("unauthorized" if status == 401 else "forbidden") and says in error["message"]
    (refused,) = target.audit()[seen:]
    assert refused["event"] == "deploy_refused" and says in refused["reason"][0]
    if token is not None:
        assert refused["github_oidc"]["jti"]  # the claims, as the token holds them
        written = json.dumps(target.audit()) + target.server.log_text()
        signature = token.split(".")[-1]
        assert token not in written and (not signature or signature not in written)
    assert ours(docker.from_env(), target) == []
    record(f"ATTACK | {name} | {response.status_code} | {error['code']} | {error['message']}")


def test_while_githubs_keys_cannot_be_fetched_deploys_are_503_and_reads_go_on(
    make_agent: AgentFactory, github: Github, images: Images
) -> None:
    down = Jwks()
    try:
        down.fail(503)
        agent = make_agent(extra_env=agent_settings(down))
        minted = github_issuer(down)
        refused = post(agent, deploy_body(images), minted.sign(github.key, minted.claims(event_name="push")))
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "auth_unavailable")
        # The caller learns only that the keys cannot be loaded; the URL and the reason go to the agent's log.
        assert refused.json()["error"]["message"] == "the GitHub OIDC signing keys cannot be loaded; retry shortly"
        assert "GitHub OIDC keys not fetched" in agent.server.log_text()
        assert agent.get("/v1/status").status_code == 200
        assert [r["event"] for r in agent.audit()] == ["deploy_refused"]
        # GitHub answers again: after the retry interval the next deploy is checked against its keys.
        down.serve(github.key)
        time.sleep(3.5)
        again = post(agent, deploy_body(images), minted.sign(github.key, minted.claims(event_name="push")))
        assert again.status_code == 403 and "event_name is 'push'" in again.json()["error"]["message"]
    finally:
        down.close()
