"""Ask GitHub Actions for an OIDC token addressed to an audience (the deploy job's `id-token: write`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import quote

from runner.core.errors import DeployplanError
from runner.core.secrets import Secret

TIMEOUT = 30.0


class OidcUnavailable(DeployplanError):
    """GitHub did not give this job a token."""


def fetch_token(environ: Mapping[str, str], *, audience: str) -> Secret:
    """`GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the request token; the answer's `value`, wrapped."""
    url, bearer = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"), environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        raise OidcUnavailable("ACTIONS_ID_TOKEN_REQUEST_URL / ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set")
    request = urllib.request.Request(
        f"{url}&audience={quote(audience, safe='')}", headers={"Authorization": f"bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            value = json.loads(response.read()).get("value")
    except (OSError, ValueError, AttributeError) as e:
        reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else type(e).__name__
        raise OidcUnavailable(f"GitHub did not give an OIDC token ({reason})") from None
    if not isinstance(value, str) or not value:
        raise OidcUnavailable("GitHub's answer holds no token")
    return Secret(value)
