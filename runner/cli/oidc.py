"""The deploy job's GitHub Actions OIDC token: asked for when DEPLOY_OIDC_AUDIENCE is set, sent with the deploy.

GitHub gives a job with `permissions: id-token: write` two variables; `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=A`
with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN` answers `{"value": "<jwt>"}`. The token is a
credential for one deploy: it is wrapped as a Secret where it enters, masked in GitHub mode at once, and revealed
only into the request header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote

from runner.cli.errors import AgentUnreachable, UsageError
from runner.core.secrets import Secret

AUDIENCE = "DEPLOY_OIDC_AUDIENCE"
REQUEST_URL, REQUEST_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
HEADER = "X-GitHub-OIDC-Token"
TIMEOUT = 30.0
MAX_ANSWER = 64 * 1024


class TokenUnavailable(AgentUnreachable):
    """GitHub did not give the job its OIDC token; nothing was sent to the agent (exit 3)."""


def wanted(environ: Mapping[str, str]) -> str | None:
    """DEPLOY_OIDC_AUDIENCE, or None when no token is wanted: unset, empty or blank (a repository variable set to
    spaces) all mean none. Every command reads it here, so `check` and `apply` decide alike."""
    return environ.get(AUDIENCE, "").strip() or None


def audience(environ: Mapping[str, str]) -> str | None:
    """DEPLOY_OIDC_AUDIENCE (as `wanted` reads it), or None when no token is wanted; UsageError (exit 2) when
    GitHub gave the job no way to ask for one."""
    wanted_audience = wanted(environ)
    if wanted_audience is None:
        return None
    missing = [name for name in (REQUEST_URL, REQUEST_TOKEN) if not environ.get(name)]
    if missing:
        raise UsageError(
            f"{AUDIENCE} is set, so the deploy must carry a GitHub OIDC token, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not: the deploy job needs `permissions: id-token: write` "
            "(and only the deploy job); nothing was sent"
        )
    return wanted_audience


def request_token(environ: Mapping[str, str], wanted: str, *, timeout: float = TIMEOUT) -> Secret:
    """Ask GitHub for the job's OIDC token for `wanted`; TokenUnavailable names what went wrong, never a value."""
    import http.client  # here: only a deploy that asks for a token pays for urllib's imports
    import urllib.error
    import urllib.request

    url = environ[REQUEST_URL]
    url += ("&" if "?" in url else "?") + f"audience={quote(wanted, safe='')}"
    request = urllib.request.Request(
        url,
        headers={"Authorization": f"bearer {environ[REQUEST_TOKEN]}", "Accept": "application/json"},
    )
    where = f"{REQUEST_URL} (GitHub's OIDC token service)"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as e:
        e.close()
        raise TokenUnavailable(f"{where} answered HTTP {e.code}; nothing was sent to the agent") from None
    except (OSError, http.client.HTTPException) as e:  # URLError, a timeout, a reset, a broken answer
        reason = getattr(e, "reason", None) or type(e).__name__
        raise TokenUnavailable(f"{where} is unreachable ({reason}); nothing was sent to the agent") from None
    try:
        value = json.loads(raw).get("value") if len(raw) <= MAX_ANSWER else None
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or value.count(".") != 2 or not value.isascii() or not value.isprintable():
        raise TokenUnavailable(f'{where} did not answer {{"value": "<jwt>"}}; nothing was sent to the agent')
    return Secret(value)
