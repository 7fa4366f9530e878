"""Who is calling, and what they may do: one authenticator per DEPLOY_AGENT_AUTH mode, and the deploy rights."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Protocol

from werkzeug.datastructures import Headers

from agent.config import Config
from agent.errors import Forbidden, Unauthorized


class Authenticator(Protocol):
    """Returns the actor (a person's email, a service token's name) or raises Unauthorized."""

    def authenticate(self, headers: Headers | Mapping[str, str]) -> str: ...


class TokenAuth:
    """`Authorization: Bearer <DEPLOY_AGENT_TOKEN>`, compared in constant time."""

    ACTOR = "token"

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def authenticate(self, headers: Headers | Mapping[str, str]) -> str:
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("missing Authorization: Bearer token")
        if not hmac.compare_digest(given.strip().encode("utf-8", errors="replace"), self._token):
            raise Unauthorized("the bearer token is not valid")
        return self.ACTOR


def make_authenticator(config: Config) -> Authenticator:
    """The authenticator for the configured mode."""
    if config.auth == "token" and config.token is not None:
        return TokenAuth(config.token.reveal())
    if config.auth == "cloudflare-access":
        # Imported here: token mode never loads PyJWT.
        from agent.access import CloudflareAccessAuth

        return CloudflareAccessAuth.from_config(config)
    raise NotImplementedError(f"DEPLOY_AGENT_AUTH={config.auth} is not available in this version")


def require_deployer(config: Config, actor: str, environments: list[str], *, what: str) -> None:
    """Being let in is not the right to deploy: with Access, the actor must be listed for every environment.

    With `token` auth the one token holds every right (demo and tests).
    """
    if config.deployers is None:
        return
    missing = [env for env in environments if actor.casefold() not in config.deployers.get(env, frozenset())]
    if missing:
        variables = ", ".join(f"DEPLOY_AGENT_DEPLOYERS_{env.upper()}" for env in missing)
        raise Forbidden(f"{actor} may read and dry-run, but not {what}: it is not listed in {variables}")


def may_deploy(config: Config, actor: str, environment: str) -> bool:
    """Whether this actor could deploy to the environment (what a dry run and whoami answer)."""
    try:
        require_deployer(config, actor, [environment], what=f"deploy to {environment}")
    except Forbidden:
        return False
    return True
