"""A small reader of GitHub's REST API for `deployplan check --github`: GET only, JSON only, no redirects.

The token is sent only to GITHUB_API_URL (https://, or http:// on 127.0.0.1 for tests); a redirect is reported,
never followed, so the token never travels to another host.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from runner.cli.errors import UsageError
from runner.core.errors import DeployplanError
from runner.core.render import check_inputs
from runner.core.secrets import Secret

PUBLIC_API = "https://api.github.com"
TIMEOUT = 30.0


class GitHubError(DeployplanError):
    """GitHub answered with an error status, or not at all."""

    def __init__(self, status: int, message: str, *, accepted: str | None = None) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message
        self.accepted = accepted  # X-Accepted-GitHub-Permissions: what a fine-grained token needs here


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


@dataclass(frozen=True)
class GitHubApi:
    """One repository's settings, read with one token."""

    base: str
    repository: str
    token: Secret

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, repository: str | None) -> GitHubApi:
        """GH_TOKEN (else GITHUB_TOKEN), GITHUB_API_URL (as in Actions; else GitHub.com's), the repository."""
        token = environ.get("GH_TOKEN") or environ.get("GITHUB_TOKEN")
        if not token:
            raise UsageError(
                "--github needs a token in GH_TOKEN or GITHUB_TOKEN (docs/first-deploy.md lists its rights)"
            )
        if not repository:
            raise UsageError("--github needs the repository: --repository owner/repo, or GITHUB_REPOSITORY")
        _, bad = check_inputs(env="dev", tag="1.0.0", repository=repository, source="")
        if bad:
            raise UsageError(f"--repository: {bad[0].message}")
        base = (environ.get("GITHUB_API_URL") or PUBLIC_API).rstrip("/")
        parts = urlsplit(base)
        if (
            not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname == "127.0.0.1"))
            or not parts.hostname
        ):
            raise UsageError(f"GITHUB_API_URL {base!r} must be an https:// URL (http:// only on 127.0.0.1)")
        return cls(base=base, repository=repository, token=Secret(token))

    def repo_path(self, *parts: str) -> str:
        """/repos/{owner}/{repo}/... with each part quoted."""
        return "/repos/" + self.repository + "".join("/" + quote(p, safe="") for p in parts)

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.base + path,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token.reveal()}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "deployplan-check",
            },
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise GitHubError(e.code, _message(e), accepted=e.headers.get("X-Accepted-GitHub-Permissions")) from None
        except (OSError, ValueError) as e:
            raise GitHubError(0, f"cannot read {self.base}: {type(e).__name__}: {e}") from None


def _message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
    except (OSError, ValueError):
        body = None
    if 300 <= error.code < 400:
        return f"redirect to {error.headers.get('Location')} (a renamed repository? use its new name)"
    found = body.get("message") if isinstance(body, dict) else None
    return str(found or error.reason)
