"""DEPLOY_AGENT_GITHUB_OIDC through the agent's app: refusals audited with the claims and never the token, nothing
touched, a `jti` accepted once (across restarts too), `origin` verified or claimed, `/v1/whoami` and the dry run's
`may_deploy` agreeing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from accesskeys import HEADER as ACCESS_HEADER
from accesskeys import TEAM, Issuer, Jwks, Key
from agent.auditlog import AuditLog
from agent.oidcclaims import audited
from conftest import RUNTIME_ENV, Api, api_document, plan, record_deployment
from fakedocker import FakeDocker
from githuboidc import AUDIENCE, GithubIssuer, agent_settings, github_issuer

HEADER = "X-GitHub-OIDC-Token"
CLAIMED = {"actor": "mallory", "run_url": "https://github.com/evil/x/actions/runs/1", "repository": "evil/x"}


@pytest.fixture
def required(make_api: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer]) -> Callable[..., Api]:
    """Agents with DEPLOY_AGENT_GITHUB_OIDC=required; Docker "gone" unless given, so an accepted token stops at
    the next check (503) and nothing could be touched."""
    jwks, _, _ = issuer

    def make(docker: FakeDocker | None = None, **changes: str) -> Api:
        return make_api(docker=docker or FakeDocker(reachable=False), **{**agent_settings(jwks), **changes})

    return make


def body(env: str = "dev", *, dry_run: bool = False, **extra: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {"plan": plan(env=env), "env": RUNTIME_ENV, "dry_run": dry_run, **extra}
    if env == "prod":
        sent["confirm"] = "prod:1.0.3"
    return sent


def sign(issuer: tuple[Jwks, Key, GithubIssuer], **claims: Any) -> tuple[str, dict[str, Any]]:
    _, key, minted = issuer
    found = minted.claims(**claims)
    return minted.sign(key, found), found


def refusals(api: Api) -> list[dict[str, Any]]:
    return [r for r in api.audit() if r["event"] == "deploy_refused"]


def test_a_deploy_without_the_token_is_401_audited_and_touches_nothing(required: Callable[..., Api]) -> None:
    api = required(docker=FakeDocker())
    answer = api.deploy(body())
    assert answer.status_code == 401, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "unauthorized" and "no X-GitHub-OIDC-Token header" in error["message"]
    (refused,) = refusals(api)
    assert refused["actor"] == "token" and refused["environment"] == "dev"
    assert "no X-GitHub-OIDC-Token header" in refused["reason"][0]
    assert api.docker.touched() == [] and not any(r["event"] == "deployment_started" for r in api.audit())


@pytest.mark.parametrize(
    ("changes", "env", "status", "claim"),
    [
        ({"aud": "https://other.example.test"}, "dev", 401, "aud"),
        ({"event_name": "push"}, "dev", 403, "event_name"),
        ({"environment": "dev"}, "prod", 403, "environment"),
        ({"repository_id": "1"}, "dev", 403, "repository_id"),
        # Signed by the issuer, but without a claim the verified origin is made of: refused, not a 500.
        ({"run_id": None}, "dev", 401, "run_id"),
        ({"actor": None}, "dev", 401, "actor"),
    ],
)
def test_a_refused_token_is_audited_with_its_claims_never_the_token(
    required: Callable[..., Api],
    issuer: tuple[Jwks, Key, GithubIssuer],
    changes: dict[str, Any],
    env: str,
    status: int,
    claim: str,
) -> None:
    api = required(docker=FakeDocker())
    token, claims = sign(issuer, **changes)
    answer = api.deploy(body(env), **{HEADER: token})
    assert answer.status_code == status
    assert claim in answer.get_json()["error"]["message"]
    api_document("ForbiddenError" if status == 403 else "UnauthorizedError").validate(answer.get_json())
    (refused,) = refusals(api)
    assert refused["github_oidc"]["jti"] == claims["jti"] and refused["github_oidc"].get(claim) == claims.get(claim)
    assert refused["github_oidc"].get("run_id") == claims.get("run_id")
    assert token not in (api.state_dir / "audit.jsonl").read_text()
    assert token.split(".")[2] not in (api.state_dir / "audit.jsonl").read_text()
    assert api.docker.touched() == []


def test_an_accepted_token_passes_to_the_next_check(
    required: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer]
) -> None:
    """Docker is unreachable here: a token that passed every check meets the 503, not a 401 or 403."""
    api = required()
    token, _ = sign(issuer)
    answer = api.deploy(body(origin=CLAIMED), **{HEADER: token})
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (503, "docker_unavailable")


def finished(api: Api, answer: Any) -> dict[str, Any]:
    """The accepted deployment once it ended (the recording Docker cannot pull: it fails in pull at once)."""
    assert answer.status_code == 202, answer.get_json()
    path, deadline = f"/v1/deployments/{answer.get_json()['deployment_id']}", time.monotonic() + 10
    found: dict[str, Any] = api.get(path).get_json()
    while found["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
        found = api.get(path).get_json()
    assert found["state"] != "running"
    # The worker thread releases the deploy lock a moment after it records the end: wait for it, or the next
    # deploy of the test meets 409 instead of what it checks.
    for thread in threading.enumerate():
        if thread.name == f"deploy-{found['id']}":
            thread.join(timeout=10)
    return found


def test_an_accepted_token_gives_the_verified_origin_and_is_used_up(
    required: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer]
) -> None:
    api = required(docker=FakeDocker())
    token, claims = sign(issuer, run_id="777", run_attempt="3")
    deployment = finished(api, api.deploy(body(origin=CLAIMED), **{HEADER: token}))
    assert deployment["origin"] == {
        "run_url": "https://github.com/acme/trader/actions/runs/777/attempts/3",
        "actor": "octocat",
        "repository": "acme/trader",
        "sha": claims["sha"],
        "ref": "refs/heads/main",
        "workflow": "acme/trader/.github/workflows/deploy.yml@refs/heads/main",
        "verified": True,
    }
    assert deployment["actor"] == "token"  # the authenticated caller stays the actor
    started = next(r for r in api.audit() if r["event"] == "deployment_started")
    assert started["github_oidc"]["jti"] == claims["jti"] and token not in json.dumps(api.audit())
    again = api.deploy(body(), **{HEADER: token})
    deadline = time.monotonic() + 5
    while again.status_code == 409 and time.monotonic() < deadline:  # the lock goes a moment after the last record
        time.sleep(0.02)
        again = api.deploy(body(), **{HEADER: token})
    assert again.status_code == 403 and "expected a token never accepted before" in again.get_json()["error"]["message"]
    api_document("ForbiddenError").validate(again.get_json())
    assert [r["event"] for r in api.audit()].count("deployment_started") == 1


def test_with_off_a_deploys_claimed_origin_is_kept_and_marked_unverified(api: Api) -> None:
    deployment = finished(api, api.deploy(body(origin=CLAIMED)))
    assert deployment["origin"] == {**CLAIMED, "verified": False}
    started = next(r for r in api.audit() if r["event"] == "deployment_started")
    assert started["origin"] == {**CLAIMED, "verified": False}  # recorded as a claim, not only shown as one


def test_a_token_accepted_before_is_refused_also_after_a_restart(
    required: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer], tmp_path: Path
) -> None:
    """The audit log is the record of every accepted `jti`: an agent started on it refuses the token again."""
    token, claims = sign(issuer)
    state = tmp_path / "shared-state"
    state.mkdir(mode=0o700)
    # A deployment accepted with this token, by an earlier agent on the same state directory.
    record_deployment(AuditLog(state / "audit.jsonl"), "a1", "dev", "1.0.3", "succeeded", github_oidc=audited(claims))
    api = required(docker=FakeDocker(), DEPLOY_AGENT_STATE_DIR=str(state))
    answer = api.deploy(body(), **{HEADER: token})
    assert answer.status_code == 403, answer.get_json()
    message = answer.get_json()["error"]["message"]
    assert f"jti is {claims['jti']!r}, expected a token never accepted before" in message
    (refused,) = refusals(api)
    assert refused["github_oidc"]["jti"] == claims["jti"]
    assert api.docker.touched() == []
    # The dry run and a fresh token agree: the same token may not deploy; a new run's token may.
    dry = api.deploy(body(dry_run=True), **{HEADER: token}).get_json()
    assert dry["may_deploy"] is False and "accepted before" in dry["may_deploy_reason"]
    fresh, _ = sign(issuer)
    assert api.deploy(body(dry_run=True), **{HEADER: fresh}).get_json()["may_deploy"] is True


def test_with_off_a_claimed_origin_is_marked_unverified_and_a_token_is_not_needed(api: Api) -> None:
    answer = api.deploy(body(origin=CLAIMED, dry_run=True))
    assert answer.status_code == 200
    assert (answer.get_json()["may_deploy"], answer.get_json()["github_oidc"]) == (True, "off")
    # A caller cannot claim to be verified: `verified` is not a key the request may send.
    forged = api.deploy(body(origin={**CLAIMED, "verified": True}))
    assert forged.status_code == 422 and forged.get_json()["error"]["details"][0]["path"].startswith("$.origin")


@pytest.mark.parametrize("mode", ["off", "required"])
def test_whoami_says_who_the_caller_is_and_what_it_may_do(required: Callable[..., Api], api: Api, mode: str) -> None:
    agent = api if mode == "off" else required()
    found = agent.get("/v1/whoami").get_json()
    assert found == {
        "actor": "token",
        "may_deploy": {"dev": True, "prod": True},
        "may_prune": True,
        "environments": ["dev", "prod"],
        "repository": "registry.test/acme/trader/runtime",
        "version": found["version"],
        "github_oidc": mode,
    }
    assert agent.get("/v1/whoami", Authorization="Bearer wrong").status_code == 401


@pytest.mark.parametrize(
    ("changes", "env", "may", "reason"),
    [
        ({}, "dev", True, None),
        ({"environment": "dev"}, "prod", False, "environment is 'dev', expected 'prod'"),
        ({"aud": "https://other.example.test"}, "dev", False, f"aud is not {AUDIENCE!r}"),
    ],
)
def test_a_dry_run_with_a_token_says_whether_that_token_would_be_accepted(
    required: Callable[..., Api],
    issuer: tuple[Jwks, Key, GithubIssuer],
    changes: dict[str, Any],
    env: str,
    may: bool,
    reason: str | None,
) -> None:
    api = required(docker=FakeDocker())
    token, _ = sign(issuer, **changes)
    found = api.deploy(body(env, dry_run=True), **{HEADER: token}).get_json()
    assert (found["may_deploy"], found["github_oidc"]) == (may, "required")
    assert reason is None or reason in found["may_deploy_reason"]
    assert refusals(api) == []  # a dry run refuses nothing: it answers
    # Without a token a dry run speaks for the identity, as whoami does.
    plain = api.deploy(body(env, dry_run=True)).get_json()
    assert plain["may_deploy"] is api.get("/v1/whoami").get_json()["may_deploy"][env] is True


def test_while_the_issuers_keys_cannot_be_loaded_a_deploy_is_503_and_audited(
    make_api: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer]
) -> None:
    _, key, _ = issuer
    down = Jwks()
    try:
        down.fail(503)
        api = make_api(docker=FakeDocker(), **agent_settings(down))
        minted = github_issuer(down)
        answer = api.deploy(body(), **{HEADER: minted.sign(key, minted.claims())})
        assert (answer.status_code, answer.get_json()["error"]["code"]) == (503, "auth_unavailable")
        assert "127.0.0.1" not in answer.get_json()["error"]["message"]
        (refused,) = refusals(api)
        assert "cannot be loaded" in refused["reason"][0]
        # Reads and dry runs do not need the keys; a dry run with a token says that it cannot be checked now.
        assert api.get("/v1/status").status_code == 200
        assert api.deploy(body(dry_run=True)).get_json()["may_deploy"] is True
        with_token = api.deploy(body(dry_run=True), **{HEADER: minted.sign(key, minted.claims())})
        assert with_token.status_code == 200, with_token.get_json()
        assert (
            with_token.get_json()["may_deploy"] is False
            and "cannot be loaded" in with_token.get_json()["may_deploy_reason"]
        )
    finally:
        down.close()


@pytest.mark.parametrize("mode", ["off", "required"])
def test_with_access_whoami_and_the_dry_run_agree_on_each_environment(
    make_api: Callable[..., Api], issuer: tuple[Jwks, Key, GithubIssuer], mode: str
) -> None:
    jwks, key, _ = issuer
    access = Issuer(aud="a" * 64)
    api = make_api(
        headers={},
        DEPLOY_AGENT_AUTH="cloudflare-access",
        DEPLOY_AGENT_TOKEN=None,
        DEPLOY_AGENT_ACCESS_TEAM_DOMAIN=TEAM,
        DEPLOY_AGENT_ACCESS_AUD=access.aud,
        DEPLOY_AGENT_ACCESS_CERTS_URL=jwks.url,
        DEPLOY_AGENT_DEPLOYERS_DEV="ci-dev.access",
        DEPLOY_AGENT_DEPLOYERS_PROD="ci-prod.access",
        **(agent_settings(jwks) if mode == "required" else {"DEPLOY_AGENT_GITHUB_OIDC": "off"}),
    )
    as_dev = {ACCESS_HEADER: access.sign(key, access.claims(common_name="ci-dev.access"))}
    found = api.get("/v1/whoami", **as_dev).get_json()
    assert (found["actor"], found["may_deploy"], found["may_prune"]) == (
        "ci-dev.access",
        {"dev": True, "prod": False},
        False,
    )
    assert found["github_oidc"] == mode
    for env in ("dev", "prod"):
        dry = api.deploy(body(env, dry_run=True), **as_dev).get_json()
        assert dry["may_deploy"] is found["may_deploy"][env]
