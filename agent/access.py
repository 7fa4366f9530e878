"""`DEPLOY_AGENT_AUTH=cloudflare-access`: the Access JWT checked again at the origin, against the team's JWKS.

Cloudflare Access already stands in front of the tunnel; checking its signed assertion here means a request that
reaches the loopback port some other way (a second tunnel, a local process) is refused all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt
from werkzeug.datastructures import Headers

from agent.config import Config
from agent.errors import AuthUnavailable, Unauthorized
from agent.jwks import ALGORITHM, MAX_KID_CHARS, JwksCache, KeysUnavailable
from agent.logs import log

HEADER = "Cf-Access-Jwt-Assertion"
UNAVAILABLE = "the signing keys cannot be loaded; retry shortly"
LEEWAY = 30
# Access tokens are 1-2 KiB; anything far larger is not one, and is refused before it is parsed.
MAX_TOKEN_CHARS = 16 * 1024


class CloudflareAccessAuth:
    """The caller is whoever Cloudflare Access says signed in: the `Cf-Access-Jwt-Assertion` header, verified."""

    def __init__(self, *, team_domain: str, audience: str, keys: JwksCache) -> None:
        self.issuer = f"https://{team_domain}"
        self.audience = audience
        self.keys = keys

    @classmethod
    def from_config(cls, config: Config) -> CloudflareAccessAuth:
        """Built once per worker; fetches the keys now, and keeps serving /healthz when that fails."""
        assert config.access_team_domain and config.access_aud and config.access_certs_url
        keys = JwksCache(config.access_certs_url)
        keys.load()
        return cls(team_domain=config.access_team_domain, audience=config.access_aud, keys=keys)

    def authenticate(self, headers: Headers | Mapping[str, str]) -> str:
        token = headers.get(HEADER, "").strip()
        if not token:
            raise Unauthorized(f"no {HEADER} header: reach the agent through Cloudflare Access")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"the {HEADER} header is larger than {MAX_TOKEN_CHARS} characters")
        key = self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as e:
            # Our own words: PyJWT's messages may quote parts of the token.
            raise Unauthorized(_reason(e, issuer=self.issuer)) from None
        return _actor(claims)

    def _key(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the Access token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"the Access token must be signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise Unauthorized("the Access token names no signing key (kid)")
        try:
            key = self.keys.key(kid)
        except KeysUnavailable as e:
            # The certs URL and the fetch error are for the operator, not for a caller who is not yet anyone.
            log("access keys unavailable: answered 503", level=logging.WARNING, reason=str(e))
            raise AuthUnavailable(UNAVAILABLE) from None
        if key is None:
            raise Unauthorized(f"the Access token is signed by a key the team's JWKS does not hold (kid {kid[:64]!r})")
        return key


def _reason(error: jwt.PyJWTError, *, issuer: str) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the Access token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the Access token is not valid yet (nbf or iat in the future)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the Access token has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the Access token is for another Access application (aud does not contain DEPLOY_AGENT_ACCESS_AUD)"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"the Access token was not issued by {issuer}"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the Access token's signature is not valid"
    return "the Access token is not valid"


def _actor(claims: dict[str, Any]) -> str:
    """A person's email, else a service token's common_name (its JWT has no email)."""
    for claim in ("email", "common_name"):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise Unauthorized("the Access token names no one (no email, no common_name)")
