"""`DEPLOY_AGENT_GITHUB_OIDC=required`: the deploy job's GitHub Actions OIDC token, checked on every real deploy.

A job that names a GitHub Environment only runs once that environment's protection rules passed (reviewers,
allowed branches); GitHub then signs a short-lived token saying which repository, workflow file, ref, event,
environment, run and actor it belongs to. Checking it here makes the seed's rules hold at the server itself.
A token that is not valid is 401; a valid one whose claims do not allow this deploy is 403, naming the claim,
what it holds and what was expected. The token itself is never logged, audited or returned: only its claims.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from agent.auth import GITHUB_OIDC_HEADER as HEADER
from agent.config import GithubOidc
from agent.errors import AuthUnavailable, Forbidden, Unauthorized
from agent.jwks import ALGORITHM, MAX_KID_CHARS, JwksCache, KeysUnavailable
from agent.logs import log
from agent.oidcclaims import audited, refusals
from runner.core.text import shorten

LEEWAY = 60
# What `Verified.origin()` is made of: a token without one of them is not valid (401), never a 500 later.
ORIGIN_CLAIMS = ("repository", "run_id", "run_attempt", "actor", "sha", "ref", "workflow_ref")
# GitHub's tokens are about 1.5 KiB; gunicorn refuses a header field over 8190 bytes before it gets here.
MAX_TOKEN_CHARS = 8000


class TokenInvalid(Unauthorized):
    """The token is missing, malformed, badly signed, expired, or wrongly issued or addressed (401)."""

    def __init__(self, message: str, claims: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.claims = audited(claims or {})


class TokenNotAllowed(Forbidden):
    """A valid token whose claims do not allow this deploy (403); `details` names every such claim."""

    def __init__(self, message: str, claims: Mapping[str, Any], details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message, details)
        self.claims = audited(claims)


@dataclass(frozen=True)
class Verified:
    """A token that passed every check but the single use of its `jti` (that one is checked under the lock)."""

    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    def audited(self) -> dict[str, Any]:
        """The claims a deployment's audit record keeps (its `jti` makes the token single-use)."""
        return audited(self.claims)

    def origin(self) -> dict[str, Any]:
        """The deployment's `origin`, from the verified claims only."""
        c = self.claims
        run_url = f"https://github.com/{c['repository']}/actions/runs/{c['run_id']}/attempts/{c['run_attempt']}"
        return {
            "run_url": run_url,
            "actor": str(c["actor"]),
            "repository": str(c["repository"]),
            "sha": str(c["sha"]),
            "ref": str(c["ref"]),
            "workflow": str(c["workflow_ref"]),
            "verified": True,
        }


class GithubOidcVerifier:
    """Checks `X-GitHub-OIDC-Token` against the issuer's keys and DEPLOY_AGENT_GITHUB_*."""

    def __init__(self, settings: GithubOidc, keys: JwksCache) -> None:
        self.settings = settings
        self.keys = keys

    @classmethod
    def from_settings(cls, settings: GithubOidc) -> GithubOidcVerifier:
        """Built once per worker; fetches the keys now, and retries on later deploys when that fails."""
        keys = JwksCache.discovered(settings.issuer, name="GitHub OIDC keys")
        keys.load()
        return cls(settings, keys)

    def verify(self, token: str | None, *, environment: str) -> Verified:
        """The token's claims when it is valid and allows deploying `environment`; TokenInvalid (401),
        TokenNotAllowed (403) or AuthUnavailable (503) else."""
        token = (token or "").strip()
        if not token:
            raise TokenInvalid(
                f"no {HEADER} header: with DEPLOY_AGENT_GITHUB_OIDC=required a deploy must carry the deploy job's "
                "GitHub Actions OIDC token (set DEPLOY_OIDC_AUDIENCE and give the job permissions: id-token: write)"
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid(f"the {HEADER} header is larger than {MAX_TOKEN_CHARS} characters")
        claims = self._decode(token)
        self._check_claims(claims, environment)
        return Verified(claims=claims)

    def _decode(self, token: str) -> dict[str, Any]:
        unverified = _unverified_claims(token)
        key = self._key(token, unverified)
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=s.audience,
                issuer=s.issuer,
                leeway=LEEWAY,
                options={
                    # The signature's and time's claims, and those the verified origin is made of.
                    "require": ["exp", "iat", "nbf", "iss", "aud", "jti", *ORIGIN_CLAIMS],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as e:
            raise TokenInvalid(_reason(e, s), unverified) from None
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise TokenInvalid("the GitHub OIDC token's jti is not a string", claims)
        return claims

    def _key(self, token: str, unverified: Mapping[str, Any]) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("the GitHub OIDC token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            algorithm = shorten(str(header.get("alg")), 20)
            raise TokenInvalid(f"the GitHub OIDC token is signed with {algorithm}, not {ALGORITHM}", unverified)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise TokenInvalid("the GitHub OIDC token names no signing key (kid)", unverified)
        try:
            key = self.keys.key(kid)
        except KeysUnavailable as e:
            # Why (the URL, the fetch error) goes to the agent's log only; the caller learns that it cannot be done.
            log("GitHub OIDC keys unavailable", level=logging.ERROR, reason=str(e))
            raise AuthUnavailable("the GitHub OIDC signing keys cannot be loaded; retry shortly") from None
        if key is None:
            raise TokenInvalid(
                f"the GitHub OIDC token is signed by a key the issuer's JWKS does not hold (kid {kid[:64]!r})",
                unverified,
            )
        return key

    def _check_claims(self, claims: dict[str, Any], environment: str) -> None:
        """The claims that say whether this token may deploy here (403, naming the claim)."""
        refused = refusals(claims, self.settings, environment)
        if refused:
            details = [{"path": f"{HEADER}.{claim}", "message": text} for claim, text in refused]
            raise TokenNotAllowed(f"the GitHub OIDC token does not allow this deploy: {refused[0][1]}", claims, details)


def _unverified_claims(token: str) -> dict[str, Any]:
    """What the token says before it is trusted: audited with a refusal (bounded), never believed."""
    try:
        found = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return found if isinstance(found, dict) else {}


def _reason(error: jwt.PyJWTError, s: GithubOidc) -> str:
    """Our own words: PyJWT's messages may quote parts of the token."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the GitHub OIDC token has expired (exp is past, 60 s leeway)"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the GitHub OIDC token is not valid yet (nbf or iat in the future, 60 s leeway)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the GitHub OIDC token has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidAudienceError):
        return f"the GitHub OIDC token's aud is not {s.audience!r} (DEPLOY_AGENT_GITHUB_AUDIENCE)"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"the GitHub OIDC token's iss is not {s.issuer!r} (DEPLOY_AGENT_GITHUB_ISSUER)"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the GitHub OIDC token's signature is not valid"
    return "the GitHub OIDC token is not valid"
