"""Deploy rights per environment: being let in by Access is not the right to deploy (test client, local JWKS)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from accesskeys import HEADER, TEAM, Issuer, Jwks, Key
from conftest import RUNTIME_ENV, Api, plan
from fakedocker import FakeDocker

DEV_TOKEN, PROD_TOKEN = "ci-dev.access", "ci-prod.access"
PERSON = "Alice@Example.com"


@dataclass
class Access:
    api: Api
    issuer: Issuer
    key: Key

    def as_token(self, common_name: str) -> dict[str, str]:
        return {HEADER: self.issuer.sign(self.key, self.issuer.claims(common_name=common_name))}

    def as_person(self, email: str) -> dict[str, str]:
        return {HEADER: self.issuer.sign(self.key, self.issuer.user_claims(email))}


@pytest.fixture
def access(make_api: Callable[..., Api], jwks: tuple[Jwks, Key]) -> Access:
    served, key = jwks
    aud = "a" * 64
    api = make_api(
        # Docker "gone": a deploy that passes authorization stops at the next check, with a 503, not a 403.
        docker=FakeDocker(reachable=False),
        headers={},
        DEPLOY_AGENT_AUTH="cloudflare-access",
        DEPLOY_AGENT_TOKEN=None,
        DEPLOY_AGENT_ACCESS_TEAM_DOMAIN=TEAM,
        DEPLOY_AGENT_ACCESS_AUD=aud,
        DEPLOY_AGENT_ACCESS_CERTS_URL=served.url,
        DEPLOY_AGENT_DEPLOYERS_DEV=f"{DEV_TOKEN},{PERSON.lower()}",
        DEPLOY_AGENT_DEPLOYERS_PROD=PROD_TOKEN,
    )
    return Access(api=api, issuer=Issuer(aud=aud), key=key)


def deploy(env: str, *, dry_run: bool = False) -> dict[str, object]:
    sent: dict[str, object] = {"plan": plan(env=env), "env": RUNTIME_ENV, "dry_run": dry_run}
    if env == "prod":
        sent["confirm"] = "prod:1.0.3"
    return sent


@pytest.mark.parametrize(
    ("who", "env"),
    [
        pytest.param(lambda a: a.as_token(DEV_TOKEN), "prod", id="dev-token-to-prod"),
        pytest.param(lambda a: a.as_token(PROD_TOKEN), "dev", id="prod-token-to-dev"),
        pytest.param(lambda a: a.as_person("bob@example.com"), "dev", id="reader-to-dev"),
        pytest.param(lambda a: a.as_person(PERSON), "prod", id="dev-person-to-prod"),
        pytest.param(lambda a: a.as_token("ci-dev.access.evil"), "dev", id="lookalike-name"),
    ],
)
def test_a_deploy_by_someone_not_listed_is_forbidden_audited_and_touches_nothing(
    access: Access, who: Callable[[Access], dict[str, str]], env: str
) -> None:
    """Found in review: any identity Access let in (the dev workflow's token, any reader) could deploy prod."""
    headers = who(access)

    response = access.api.deploy(deploy(env), **headers)

    assert response.status_code == 403, response.get_json()
    found = response.get_json()["error"]
    assert found["code"] == "forbidden"
    assert f"DEPLOY_AGENT_DEPLOYERS_{env.upper()}" in found["message"]
    assert access.api.docker.calls == []
    (refused,) = access.api.audit()
    assert refused["event"] == "deploy_refused" and refused["environment"] == env
    assert refused["actor"] != "token" and refused["actor"] in found["message"]


@pytest.mark.parametrize(
    ("who", "env"),
    [
        pytest.param(lambda a: a.as_token(DEV_TOKEN), "dev", id="dev-token"),
        pytest.param(lambda a: a.as_token(PROD_TOKEN), "prod", id="prod-token"),
        pytest.param(lambda a: a.as_person("ALICE@example.COM"), "dev", id="listed-person-any-case"),
    ],
)
def test_a_listed_deployer_passes_authorization(
    access: Access, who: Callable[[Access], dict[str, str]], env: str
) -> None:
    response = access.api.deploy(deploy(env), **who(access))
    # Past authorization: the next check is Docker, which is gone in this fixture.
    assert (response.status_code, response.get_json()["error"]["code"]) == (503, "docker_unavailable")
    assert access.api.audit() == []


def test_anyone_let_in_may_read_and_dry_run(access: Access) -> None:
    reader = access.as_person("bob@example.com")
    assert access.api.get("/v1/status", **reader).status_code == 200
    assert access.api.get("/v1/deployments", **reader).status_code == 200
    assert access.api.get("/v1/audit", **reader).status_code == 200
    dry_run = access.api.deploy(deploy("prod", dry_run=True), **reader)
    assert (dry_run.status_code, dry_run.get_json()["error"]["code"]) == (503, "docker_unavailable")  # not 403
    assert access.api.audit() == []


def test_auth_unavailable_says_only_that_the_keys_cannot_be_loaded(
    make_api: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: the 503 showed callers who are not yet anyone the certs URL and the fetch error."""
    down = Jwks()
    down.fail(502)
    aud, key = "b" * 64, Key.new()
    api = make_api(
        headers={},
        DEPLOY_AGENT_AUTH="cloudflare-access",
        DEPLOY_AGENT_TOKEN=None,
        DEPLOY_AGENT_ACCESS_TEAM_DOMAIN=TEAM,
        DEPLOY_AGENT_ACCESS_AUD=aud,
        DEPLOY_AGENT_ACCESS_CERTS_URL=down.url,
        DEPLOY_AGENT_DEPLOYERS_DEV=DEV_TOKEN,
        DEPLOY_AGENT_DEPLOYERS_PROD=PROD_TOKEN,
    )
    try:
        response = api.get("/v1/status", **{HEADER: Issuer(aud=aud).sign(key)})
    finally:
        down.close()

    assert response.status_code == 503
    assert response.get_json()["error"] == {
        "code": "auth_unavailable",
        "message": "the signing keys cannot be loaded; retry shortly",
        "details": [],
    }
    assert "127.0.0.1" not in response.get_data(as_text=True)
    logged = capsys.readouterr().out
    assert f"{down.url} answered HTTP 502" in logged  # the operator's log has it all
