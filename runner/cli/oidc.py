"""The deploy job's GitHub Actions OIDC token: asked for when DEPLOY_OIDC_AUDIENCE is set, sent with the deploy.

GitHub gives a job with `permissions: id-token: write` two variables; `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=A`
with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN` answers `{"value": "<jwt>"}`. The token is a
credential for one deploy: it is wrapped as a Secret where it enters, masked in GitHub mode at once, and revealed
only into the request header.
"""

from __future__ import annotations

import json
import re
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


def header(token: Secret | None) -> dict[str, Secret] | None:
    """The request header that carries the job's token (None: no token, no header)."""
    return None if token is None else {HEADER: token}


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


# What to change for each reason the agent gives for refusing a job's token (agent/oidc.py, agent/oidcclaims.py).
# The token holds GitHub's facts about this job: a claim the agent does not expect is the server's setting to
# fix, unless it says how the job was run (the event, the environment, the ref).
_SERVER = "on the server (/etc/deploy-agent/agent.env), then restart the agent"
_CHANGES = {
    "repository": f"set DEPLOY_AGENT_GITHUB_REPOSITORY to this repository's owner/name {_SERVER}",
    "repository_id": (
        f"set DEPLOY_AGENT_GITHUB_REPOSITORY_ID to this repository's id (`gh api repos/OWNER/REPO --jq .id`, the "
        f"token's repository_id) {_SERVER}"
    ),
    "event_name": "start the deploy workflow by hand (workflow_dispatch): no other event may deploy",
    "environment": (
        "run the deploy job in the GitHub Environment named like the target (deploy.yml: "
        "`environment: ${{ inputs.environment }}`)"
    ),
    "ref": f"run the workflow from a ref listed in DEPLOY_AGENT_GITHUB_REFS, or add this ref there {_SERVER}",
    "workflow_ref": f"set DEPLOY_AGENT_GITHUB_WORKFLOW (and _REFS) to this workflow's path and ref {_SERVER}",
    "jti": "start a new workflow run: each token is good for one deploy",
    "aud": (
        f"make the repository variable DEPLOY_OIDC_AUDIENCE and DEPLOY_AGENT_GITHUB_AUDIENCE {_SERVER} the same string"
    ),
    "iss": f"set DEPLOY_AGENT_GITHUB_ISSUER to https://token.actions.githubusercontent.com {_SERVER}",
    "keys": "retry shortly; on the server, `deploy-agent check` and the journal say why GitHub's keys cannot be loaded",
    "time": "synchronise the server's clock (NTP), then run the workflow again",
}
_CLAIM = re.compile(r"does not allow this deploy: (\w+) (?:is|expected)|token's (aud|iss) is not")


def what_to_change(reason: str) -> str:
    """For the agent's reason to refuse this job's GitHub OIDC token (a dry run's `may_deploy_reason`, a deploy's
    403): which setting to change, and where."""
    found = _CLAIM.search(reason)
    claim = (found.group(1) or found.group(2)) if found else None
    if claim is None and "signing keys cannot be loaded" in reason:
        claim = "keys"
    elif claim is None and ("has expired" in reason or "not valid yet" in reason):
        claim = "time"
    return _CHANGES.get(
        claim or "",
        "fix what the agent names: its DEPLOY_AGENT_GITHUB_* settings (docs/github-oidc.md) or how the deploy job runs",
    )
