"""The CLI's HTTP client for the Deploy Agent: authentication headers, timeouts, and answers checked for shape."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode

from runner.cli.errors import AgentRefused, AgentUnreachable, UsageError
from runner.core.secrets import Secret
from runner.core.shapes import DeploymentDict, StatusDict

TIMEOUT = 30.0
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Cloudflare Access answers a missing or wrong service token with a redirect to its login page:
    # never follow it (and never resend a body), report it.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class Credentials:
    """Either a Cloudflare Access service token, or a bearer token for direct access (demo, tests)."""

    access_client_id: str | None
    access_client_secret: Secret | None
    bearer: Secret | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Credentials:
        """Read the credentials; a value that cannot be an HTTP header is refused by name, never shown."""
        for name in ("CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET", "DEPLOY_AGENT_TOKEN"):
            value = environ.get(name, "")
            if value and not _HEADER_VALUE.fullmatch(value):
                raise UsageError(
                    f"{name} contains a space, a line break or a non-ASCII character: set it again, exactly as issued"
                )
        secret = environ.get("CF_ACCESS_CLIENT_SECRET")
        token = environ.get("DEPLOY_AGENT_TOKEN")
        return cls(
            access_client_id=environ.get("CF_ACCESS_CLIENT_ID") or None,
            access_client_secret=Secret(secret) if secret else None,
            bearer=Secret(token) if token else None,
        )

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.access_client_id and self.access_client_secret:
            headers["CF-Access-Client-Id"] = self.access_client_id
            headers["CF-Access-Client-Secret"] = self.access_client_secret.reveal()
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer.reveal()}"
        return headers


class NotDelivered(AgentUnreachable):
    """The request certainly never reached the agent: no connection, or a redirect in front of it."""


class ApiFailure(AgentRefused):
    """The agent answered with its JSON error body."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]]) -> None:
        self.status = status
        self.code = code
        self.details = details
        lines = [f"the agent refused ({status} {code}): {message}"]
        lines += [f"  {d.get('path', '$')}: {d.get('message', '')}" for d in details]
        super().__init__("\n".join(lines))


class AgentClient:
    """GET and POST JSON to one agent; every call has a timeout; redirects and HTML are authentication failures."""

    def __init__(self, url: str, credentials: Credentials, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def get(self, path: str, **query: str | int | None) -> dict[str, Any]:
        given = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", path + (f"?{urlencode(given)}" if given else ""), None)

    def deployment(self, deployment_id: str) -> DeploymentDict:
        return cast(DeploymentDict, self.get(f"/v1/deployments/{quote(deployment_id, safe='')}"))

    def status(self, env: str | None = None) -> StatusDict:
        return cast(StatusDict, self.get("/v1/status", env=env))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json.dumps(body).encode("utf-8"))

    def _call(self, method: str, path: str, data: bytes | None) -> dict[str, Any]:
        headers = {"Accept": "application/json", **self.credentials.headers()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                return self._decode(response.status, response.headers.get_content_type(), response.read())
        except urllib.error.HTTPError as e:
            with e:
                if 300 <= e.code < 400:
                    raise self._redirected(e.code, e.headers.get("Location")) from None
                return self._decode(e.code, e.headers.get_content_type(), e.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            # Refused or not resolved: no byte was sent. Anything else (a timeout, a reset) may come after the
            # agent got the request.
            error = NotDelivered if isinstance(reason, ConnectionRefusedError | socket.gaierror) else AgentUnreachable
            raise error(f"cannot reach the agent at {self.url}: {reason}") from e

    def _redirected(self, status: int, location: str | None) -> NotDelivered:
        return NotDelivered(
            f"the agent at {self.url} answered with a redirect ({status} to {location or 'nowhere'}): that is "
            "Cloudflare Access asking for a login, so the service token (CF_ACCESS_CLIENT_ID / "
            "CF_ACCESS_CLIENT_SECRET) is wrong or the Access policy is not a Service Auth policy, or --agent is not "
            "the agent's https:// URL"
        )

    def _decode(self, status: int, content_type: str, raw: bytes) -> dict[str, Any]:
        if 300 <= status < 400:
            raise self._redirected(status, None)
        if content_type != "application/json":
            raise AgentUnreachable(
                f"the agent at {self.url} answered {status} with {content_type or 'no content type'}, not JSON: "
                "probably Cloudflare Access (check the service token and that the policy is Service Auth) "
                "or a wrong --agent URL"
            )
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise AgentUnreachable(f"the agent at {self.url} answered {status} with invalid JSON") from e
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict):
                raise AgentUnreachable(f"the agent at {self.url} answered {status} without an error body")
            raise ApiFailure(
                status, str(error.get("code")), str(error.get("message")), list(error.get("details") or [])
            )
        if not isinstance(body, dict):
            raise AgentUnreachable(f"the agent at {self.url} answered {status} with JSON that is not an object")
        return body


def agent_url(given: str | None, environ: Mapping[str, str]) -> str | None:
    """--agent, else DEPLOY_AGENT_URL, else None."""
    return given or environ.get("DEPLOY_AGENT_URL") or None


def connect(given: str | None, environ: Mapping[str, str]) -> AgentClient:
    """The client for --agent (or DEPLOY_AGENT_URL) with the credentials of the environment."""
    url = agent_url(given, environ)
    if not url:
        raise UsageError("--agent is required (or set DEPLOY_AGENT_URL), e.g. --agent https://deploy.example.com")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--agent {url!r} must be an http:// or https:// URL")
    return AgentClient(url, Credentials.from_environ(environ))
