"""Who is calling: one small seam with one authenticator per DEPLOY_AGENT_AUTH mode."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Protocol

from agent.config import Config
from agent.errors import ApiError


class Authenticator(Protocol):
    """Returns the actor (a person's email, a service token's name) or raises ApiError 401."""

    def authenticate(self, headers: Mapping[str, str]) -> str: ...


def unauthorized(reason: str) -> ApiError:
    return ApiError(401, "unauthorized", reason)


class TokenAuth:
    """`Authorization: Bearer <DEPLOY_AGENT_TOKEN>`, compared in constant time."""

    ACTOR = "token"

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def authenticate(self, headers: Mapping[str, str]) -> str:
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise unauthorized("missing Authorization: Bearer token")
        if not hmac.compare_digest(given.strip().encode("utf-8", errors="replace"), self._token):
            raise unauthorized("the bearer token is not valid")
        return self.ACTOR


def make_authenticator(config: Config) -> Authenticator:
    """The authenticator for the configured mode."""
    if config.auth == "token" and config.token is not None:
        return TokenAuth(config.token.reveal())
    if config.auth == "cloudflare-access":
        # Imported here: agent.access builds on this module (unauthorized), and token mode never loads PyJWT.
        from agent.access import CloudflareAccessAuth

        return CloudflareAccessAuth.from_config(config)
    raise NotImplementedError(f"DEPLOY_AGENT_AUTH={config.auth} is not available in this version")
