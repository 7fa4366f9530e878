"""The GitHub OIDC token's checks, as a table: forgeries are 401, claims that do not allow the deploy are 403, each
message naming the claim, what it holds and what was expected (a local issuer: discovery document and JWKS)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from accesskeys import Clock, Jwks, Key
from agent.config import GithubOidc
from agent.errors import AuthUnavailable, Forbidden, Unauthorized
from agent.jwks import JwksCache, KeysUnavailable
from agent.oidc import GithubOidcVerifier, TokenInvalid, TokenNotAllowed
from githuboidc import AUDIENCE, MAIN, REPOSITORY, REPOSITORY_ID, WORKFLOW, GithubIssuer, github_issuer


class Setup:
    def __init__(self, jwks: Jwks, key: Key, other: Key) -> None:
        self.jwks, self.key, self.other = jwks, key, other
        self.issuer: GithubIssuer = github_issuer(jwks)
        self.settings = GithubOidc(
            issuer=jwks.issuer,
            audience=AUDIENCE,
            repository=REPOSITORY,
            repository_id=REPOSITORY_ID,
            workflow=WORKFLOW,
            refs=(MAIN, "refs/heads/release"),
        )

    def verifier(self) -> GithubOidcVerifier:
        return GithubOidcVerifier(self.settings, JwksCache.discovered(self.jwks.issuer, name="GitHub OIDC keys"))

    def token(self, **claims: Any) -> str:
        return self.issuer.sign(self.key, self.issuer.claims(**claims))


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    key, other, jwks = Key.new(), Key.new(), Jwks()
    jwks.serve(key)
    yield Setup(jwks, key, other)
    jwks.close()


def _hs256_with_public_key(s: Setup) -> str:
    """The classic confusion: HMAC keyed with the public key's PEM, which anyone can fetch."""
    header = {"alg": "HS256", "typ": "JWT", "kid": s.key.kid}
    return s.issuer.raw(
        header, s.issuer.claims(), lambda data: hmac.new(s.key.public_pem(), data, hashlib.sha256).digest()
    )


def _tampered(s: Setup) -> str:
    """A token of another repository whose payload was swapped into a validly signed one."""
    good = s.token().split(".")
    forged = s.issuer.raw({"alg": "RS256", "kid": s.key.kid}, s.issuer.claims(repository="evil/trader")).split(".")
    return ".".join([good[0], forged[1], good[2]])


def _ago(seconds: int) -> int:
    return int(time.time()) - seconds


Case = Callable[[Setup], str | None]
INVALID: list[tuple[str, Case, str]] = [
    ("missing", lambda s: None, "no X-GitHub-OIDC-Token header"),
    ("not-a-jwt", lambda s: "not.a.jwt", "not a well-formed JWT"),
    (
        "alg-none",
        lambda s: s.issuer.raw({"alg": "none", "typ": "JWT", "kid": s.key.kid}, s.issuer.claims()),
        "signed with none, not RS256",
    ),
    ("hs256-with-the-public-key", _hs256_with_public_key, "signed with HS256, not RS256"),
    (
        "foreign-key-with-a-known-kid",
        lambda s: s.issuer.sign(s.other, s.issuer.claims(), kid=s.key.kid),
        "signature is not valid",
    ),
    ("unknown-kid", lambda s: s.issuer.sign(s.other, s.issuer.claims()), "JWKS does not hold"),
    ("tampered-payload", _tampered, "signature is not valid"),
    ("expired", lambda s: s.token(exp=_ago(61 + 5), iat=_ago(600), nbf=_ago(600)), "has expired"),
    ("issued-in-the-future", lambda s: s.token(iat=_ago(-300), nbf=_ago(0)), "not valid yet"),
    ("not-before-in-the-future", lambda s: s.token(nbf=_ago(-300)), "not valid yet"),
    ("wrong-audience", lambda s: s.token(aud="https://other.example.test"), f"aud is not {AUDIENCE!r}"),
    ("audience-list-without-ours", lambda s: s.token(aud=["https://a.test", "https://b.test"]), "aud is not"),
    ("wrong-issuer", lambda s: s.token(iss="https://token.actions.githubusercontent.com"), "iss is not"),
    ("no-jti", lambda s: s.token(jti=None), "no 'jti' claim"),
    ("no-exp", lambda s: s.token(exp=None), "no 'exp' claim"),
]

OTHER_WORKFLOW = f"{REPOSITORY}/.github/workflows/other.yml@{MAIN}"
FEATURE = "refs/heads/feature/x"
NOT_ALLOWED: list[tuple[str, Callable[[Setup], str], str, str]] = [
    (
        "another-repository",
        lambda s: s.token(repository="evil/trader", workflow_ref=f"evil/trader/{WORKFLOW}@{MAIN}"),
        "dev",
        "repository is 'evil/trader', expected 'acme/trader'",
    ),
    (
        "re-created-repository",
        lambda s: s.token(repository_id="999999999"),
        "dev",
        "repository_id is '999999999', expected '734120967'",
    ),
    ("push-event", lambda s: s.token(event_name="push"), "dev", "event_name is 'push', expected 'workflow_dispatch'"),
    (
        "schedule-event",
        lambda s: s.token(event_name="schedule"),
        "dev",
        "event_name is 'schedule', expected 'workflow_dispatch'",
    ),
    ("dev-token-for-prod", lambda s: s.token(environment="dev"), "prod", "environment is 'dev', expected 'prod'"),
    ("no-environment", lambda s: s.token(environment=None), "dev", "environment is missing, expected 'dev'"),
    (
        "another-workflow",
        lambda s: s.token(workflow_ref=OTHER_WORKFLOW),
        "dev",
        f"workflow_ref is {OTHER_WORKFLOW!r}, expected 'acme/trader/.github/workflows/deploy.yml@refs/heads/main'",
    ),
    (
        "feature-branch",
        lambda s: s.token(ref=FEATURE, workflow_ref=f"{REPOSITORY}/{WORKFLOW}@{FEATURE}"),
        "dev",
        f"ref is {FEATURE!r}, expected one of refs/heads/main, refs/heads/release",
    ),
    (
        "workflow-from-another-ref-than-the-job",
        lambda s: s.token(workflow_ref=f"{REPOSITORY}/{WORKFLOW}@{FEATURE}"),
        "dev",
        "workflow_ref is 'acme/trader/.github/workflows/deploy.yml@refs/heads/feature/x', expected",
    ),
    (
        "a-tag-not-listed",
        lambda s: s.token(ref="refs/tags/v1.0.0", workflow_ref=f"{REPOSITORY}/{WORKFLOW}@refs/tags/v1.0.0"),
        "dev",
        "ref is 'refs/tags/v1.0.0', expected one of",
    ),
]


@pytest.mark.parametrize(("name", "make", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_a_token_that_is_not_valid_is_401(setup: Setup, name: str, make: Case, message: str) -> None:
    token = make(setup)
    with pytest.raises(Unauthorized) as refused:
        setup.verifier().verify(token, environment="dev")
    assert isinstance(refused.value, TokenInvalid)
    assert message in refused.value.message
    if token:
        assert token not in refused.value.message and token not in str(refused.value.claims)


@pytest.mark.parametrize(("name", "make", "env", "message"), NOT_ALLOWED, ids=[c[0] for c in NOT_ALLOWED])
def test_a_valid_token_whose_claims_do_not_allow_the_deploy_is_403(
    setup: Setup, name: str, make: Callable[[Setup], str], env: str, message: str
) -> None:
    token = make(setup)
    with pytest.raises(Forbidden) as refused:
        setup.verifier().verify(token, environment=env)
    assert isinstance(refused.value, TokenNotAllowed)
    assert message in refused.value.message
    assert refused.value.claims["jti"] and "run_id" in refused.value.claims  # audited: the claims, never the token
    assert token not in str(refused.value.claims)


@pytest.mark.parametrize(
    "changes",
    [  # functions: the times are taken when the test runs, not when it is collected (minutes earlier in `make test`)
        lambda: {},
        lambda: {"repository": "ACME/Trader", "workflow_ref": f"ACME/Trader/{WORKFLOW}@{MAIN}"},  # GitHub's casing
        lambda: {"aud": ["https://other.example.test", AUDIENCE]},
        lambda: {"exp": _ago(30)},  # within the 60 s leeway
        lambda: {"iat": _ago(-30), "nbf": _ago(-30)},
        lambda: {"ref": "refs/heads/release", "workflow_ref": f"{REPOSITORY}/{WORKFLOW}@refs/heads/release"},
    ],
    ids=["plain", "repository-casing", "audience-list", "exp-in-leeway", "iat-in-leeway", "second-allowed-ref"],
)
def test_a_token_of_the_deploy_workflow_is_accepted(setup: Setup, changes: Callable[[], dict[str, Any]]) -> None:
    claims = setup.issuer.claims(**changes())
    verified = setup.verifier().verify(setup.issuer.sign(setup.key, claims), environment="dev")
    assert verified.jti == claims["jti"]
    origin = verified.origin()
    assert origin == {
        "run_url": f"https://github.com/{claims['repository']}/actions/runs/{claims['run_id']}/attempts/1",
        "actor": "octocat",
        "repository": claims["repository"],
        "sha": claims["sha"],
        "ref": claims["ref"],
        "workflow": claims["workflow_ref"],
        "verified": True,
    }


def test_every_claim_that_does_not_allow_it_is_named_in_the_details(setup: Setup) -> None:
    token = setup.token(repository_id="1", event_name="push", environment=None)
    with pytest.raises(TokenNotAllowed) as refused:
        setup.verifier().verify(token, environment="prod")
    paths = [d["path"] for d in refused.value.details]
    assert paths == [f"X-GitHub-OIDC-Token.{c}" for c in ("repository_id", "event_name", "environment")]


def test_without_the_issuers_keys_a_deploy_is_503_not_401() -> None:
    jwks, key = Jwks(), Key.new()
    try:
        jwks.fail(503)
        s = Setup(jwks, key, key)
        with pytest.raises(AuthUnavailable) as refused:
            s.verifier().verify(s.token(), environment="dev")
        # The caller learns that the keys cannot be loaded; the URL and the fetch error go to the log only.
        assert refused.value.message == "the GitHub OIDC signing keys cannot be loaded; retry shortly"
    finally:
        jwks.close()


def test_a_discovery_document_of_another_issuer_is_not_trusted() -> None:
    jwks, key = Jwks(), Key.new()
    try:
        jwks.serve(key)
        jwks.discovery = b'{"issuer": "https://evil.example.test", "jwks_uri": "https://evil.example.test/keys"}'
        s = Setup(jwks, key, key)
        verifier = s.verifier()
        with pytest.raises(AuthUnavailable):
            verifier.verify(s.token(), environment="dev")
        with pytest.raises(KeysUnavailable, match="does not describe the issuer"):
            verifier.keys.key(s.key.kid)
    finally:
        jwks.close()


# -- GitHub's keys come through the same cache as the Access keys, found through the discovery document


def test_githubs_keys_follow_the_access_keys_rules_through_discovery() -> None:
    """Refetched on an unknown kid at most once a minute (each fetch: the discovery document, then the JWKS it
    names); kept while a refresh fails, and untrusted 24 h after the last fetch that worked."""
    old, new = Key.new(), Key.new()
    jwks, clock = Jwks(), Clock()
    try:
        jwks.serve(old)
        cache = JwksCache.discovered(jwks.issuer, name="GitHub OIDC keys", clock=clock)
        cache.load()
        assert cache.key(old.kid) is not None and jwks.hits == 2
        jwks.serve(new)
        assert cache.key(new.kid) is not None and jwks.hits == 4  # unknown kid: fetched again
        assert cache.key("made-up") is None and jwks.hits == 4  # not again within the minute
        jwks.fail(503)
        clock.now += 3600
        assert cache.key(new.kid) is not None  # the refresh failed: the keys in hand stay
        clock.now += 23 * 3600
        with pytest.raises(KeysUnavailable, match="keys older than 24 h are not trusted"):
            cache.key(new.kid)
    finally:
        jwks.close()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<html>", "is not JSON"),
        (b'{"jwks_uri": "http://127.0.0.1:1/keys"}', "does not describe the issuer"),
        (b'{"issuer": "ISSUER", "jwks_uri": "http://evil.example.test/keys"}', "names no https:// jwks_uri"),
        (b'{"issuer": "ISSUER"}', "names no https:// jwks_uri"),
    ],
    ids=["not-json", "no-issuer", "plain-http-keys", "no-jwks-uri"],
)
def test_a_bad_discovery_document_loads_no_keys(document: bytes, reason: str) -> None:
    jwks, key = Jwks(), Key.new()
    try:
        jwks.serve(key)
        jwks.discovery = document.replace(b"ISSUER", jwks.issuer.encode())
        cache = JwksCache.discovered(jwks.issuer, name="GitHub OIDC keys")
        cache.load()
        with pytest.raises(KeysUnavailable, match=reason):
            cache.key(key.kid)
    finally:
        jwks.close()
