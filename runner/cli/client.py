"""The CLI's HTTP client for the Deploy Agent: authentication headers, timeouts, and answers checked for shape.

One kept connection serves a command's reads (a deploy followed through Cloudflare is a POST and a few long
polls: one TLS handshake, not one per request). Redirects are never followed: Cloudflare Access answers a
missing or wrong service token with a redirect to its login page, and that is reported, never resent.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

from runner.cli.errors import AgentRefused, AgentUnreachable, UsageError
from runner.core.secrets import Secret
from runner.core.shapes import DeploymentDict, LogsDict, StatusDict

TIMEOUT = 30.0
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


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
        _refuse_half_access_token(environ)
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


def half_access_token(environ: Mapping[str, str]) -> str | None:
    """What is wrong when one of the two Access variables is set without the other (no Access headers at all
    would be sent), or None: both set, or neither (an empty one counts as unset)."""
    names = ("CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET")
    given = [name for name in names if environ.get(name)]
    if len(given) != 1:
        return None
    lacking = next(name for name in names if name not in given)
    state = "empty (an empty GitHub secret arrives as an empty string)" if lacking in environ else "not set"
    return f"{given[0]} is set but {lacking} is {state}"


def _refuse_half_access_token(environ: Mapping[str, str]) -> None:
    """One of the two Access variables without the other: refused by name, before anything is sent."""
    half = half_access_token(environ)
    if half is not None:
        raise UsageError(
            f"{half}: set both, from the same Cloudflare Access service token, or neither; nothing was sent"
        )


class NotDelivered(AgentUnreachable):
    """The request certainly never reached the agent: no connection, or a redirect in front of it."""


class Redirected(NotDelivered):
    """Something in front of the agent answered with a redirect: Cloudflare Access sending us to its login page."""

    def __init__(self, message: str, location: str | None) -> None:
        super().__init__(message)
        self.location = location


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
        parts = urlsplit(self.url)
        self._secure, self._host, self._base = parts.scheme == "https", parts.netloc, parts.path
        self._connection: http.client.HTTPConnection | None = None
        self.last_date: str | None = None  # the HTTP Date header of the last answer (`deployplan check`'s clock)

    def get(self, path: str, *, timeout: float | None = None, **query: str | int | None) -> dict[str, Any]:
        given = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", path + (f"?{urlencode(given)}" if given else ""), None, timeout=timeout)

    def post(self, path: str, body: dict[str, Any], *, headers: Mapping[str, Secret] | None = None) -> dict[str, Any]:
        """POST JSON; `headers` are credentials of this one request (revealed only into the request)."""
        return self._call("POST", path, json.dumps(body).encode("utf-8"), extra=headers)

    def deployment(self, deployment_id: str, *, wait: int = 0, after: int | None = None) -> DeploymentDict:
        """One deployment; with `wait`, the agent answers when it changes past `after` (or the wait ends)."""
        path = f"/v1/deployments/{quote(deployment_id, safe='')}"
        found = self.get(path, timeout=self.timeout + wait, wait=wait or None, after=after)
        return cast(DeploymentDict, found)

    def status(self, env: str | None = None) -> StatusDict:
        return cast(StatusDict, self.get("/v1/status", env=env))

    def history(self, env: str | None, limit: int) -> list[DeploymentDict]:
        return cast(list[DeploymentDict], self.get("/v1/deployments", env=env, limit=limit).get("deployments", []))

    def logs(self, env: str, *, tail: int, since: str | None) -> LogsDict:
        return cast(LogsDict, self.get(f"/v1/logs/{quote(env, safe='')}", tail=tail, since=since))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _call(
        self,
        method: str,
        path: str,
        data: bytes | None,
        *,
        timeout: float | None = None,
        extra: Mapping[str, Secret] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", **self.credentials.headers()}
        headers.update({name: value.reveal() for name, value in (extra or {}).items()})
        if data is not None:
            headers["Content-Type"] = "application/json"
        # A kept connection may have been closed by the agent meanwhile. A read is then sent again once on a new
        # one; a POST always goes on a new connection, so that it is certainly sent once.
        attempts = 1 if method == "POST" or self._connection is None else 2
        if method == "POST":
            self.close()
        for attempt in range(attempts):
            connection = self._connect(timeout or self.timeout)
            try:
                connection.request(method, self._base + path, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if attempt + 1 < attempts:
                    continue
                raise AgentUnreachable(f"cannot reach the agent at {self.url}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # Refused or not resolved: no byte was sent. Anything else (a timeout, a reset) may come after the
                # agent got the request.
                error = NotDelivered if isinstance(e, ConnectionRefusedError | socket.gaierror) else AgentUnreachable
                raise error(f"cannot reach the agent at {self.url}: {e}") from e
            self.last_date = response.getheader("Date")
            if response.will_close:
                self.close()
            if 300 <= response.status < 400:
                raise self._redirected(response.status, response.getheader("Location"))
            content_type = (response.getheader("Content-Type") or "").partition(";")[0].strip().lower()
            return self._decode(response.status, content_type, raw)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._connection = kind(self._host, timeout=timeout)
        self._connection.timeout = timeout
        if self._connection.sock is not None:
            self._connection.sock.settimeout(timeout)
        return self._connection

    def _redirected(self, status: int, location: str | None) -> Redirected:
        return Redirected(
            f"the agent at {self.url} answered with a redirect ({status} to {location or 'nowhere'}): that is "
            "Cloudflare Access asking for a login, so the service token (CF_ACCESS_CLIENT_ID / "
            "CF_ACCESS_CLIENT_SECRET) is wrong or the Access policy is not a Service Auth policy, or --agent is not "
            "the agent's https:// URL",
            location,
        )

    def _decode(self, status: int, content_type: str, raw: bytes) -> dict[str, Any]:
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
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number in 1-65535 raises here, not at the first request
    except ValueError as e:
        raise UsageError(f"--agent {url!r} is not a usable URL: {e}") from None
    if not parts.hostname:
        raise UsageError(f"--agent {url!r} names no host, e.g. --agent https://deploy.example.com")
    return AgentClient(url, Credentials.from_environ(environ))
