"""GitHub Actions' OIDC issuer, played by the tests: the deploy job's token with every claim GitHub documents, and
the job's token request endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`) on loopback.

The issuer's discovery document and JWKS are served by `accesskeys.Jwks` (one local issuer for both kinds of
token); tokens are signed with `accesskeys.Key`s.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lab
from accesskeys import Issuer, Jwks, Key

OWNER, REPO = "acme", "trader"
REPOSITORY = f"{OWNER}/{REPO}"
REPOSITORY_ID = "734120967"
WORKFLOW = ".github/workflows/deploy.yml"
MAIN = "refs/heads/main"
AUDIENCE = "https://deploy.example.test"


def agent_settings(jwks: Jwks) -> dict[str, str]:
    """The agent's DEPLOY_AGENT_GITHUB_* for this issuer."""
    return {
        "DEPLOY_AGENT_GITHUB_OIDC": "required",
        "DEPLOY_AGENT_GITHUB_ISSUER": jwks.issuer,
        "DEPLOY_AGENT_GITHUB_AUDIENCE": AUDIENCE,
        "DEPLOY_AGENT_GITHUB_REPOSITORY": REPOSITORY,
        "DEPLOY_AGENT_GITHUB_REPOSITORY_ID": REPOSITORY_ID,
        "DEPLOY_AGENT_GITHUB_WORKFLOW": WORKFLOW,
        "DEPLOY_AGENT_GITHUB_REFS": MAIN,
    }


@dataclass
class GithubIssuer(Issuer):
    """Mints the deploy job's tokens as GitHub does (`iss` is the local issuer's URL)."""

    iss: str = ""

    def claims(self, **changes: Any) -> dict[str, Any]:
        """A `workflow_dispatch` run of deploy.yml on main in the `dev` environment; a change to None drops it."""
        now = int(time.time())
        environment = changes.get("environment", "dev")
        run_id = str(secrets.randbelow(10**10))
        base: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "sub": f"repo:{REPOSITORY}:environment:{environment}",
            "aud": self.aud,
            "ref": MAIN,
            "sha": secrets.token_hex(20),
            "repository": REPOSITORY,
            "repository_owner": OWNER,
            "repository_owner_id": "91234567",
            "repository_visibility": "private",
            "repository_id": REPOSITORY_ID,
            "run_id": run_id,
            "run_number": "42",
            "run_attempt": "1",
            "actor": "octocat",
            "actor_id": "583231",
            "triggering_actor": "octocat",
            "workflow": "Deploy",
            "workflow_ref": f"{REPOSITORY}/{WORKFLOW}@{MAIN}",
            "workflow_sha": secrets.token_hex(20),
            "job_workflow_ref": f"{REPOSITORY}/{WORKFLOW}@{MAIN}",
            "job_workflow_sha": secrets.token_hex(20),
            "head_ref": "",
            "base_ref": "",
            "event_name": "workflow_dispatch",
            "ref_type": "branch",
            "ref_protected": "true",
            "environment": environment,
            "runner_environment": "github-hosted",
            "iss": self.iss,
            "nbf": now - 5,
            "exp": now + 300,
            "iat": now - 5,
        }
        return {k: v for k, v in {**base, **changes}.items() if v is not None}


def github_issuer(jwks: Jwks) -> GithubIssuer:
    return GithubIssuer(aud=AUDIENCE, iss=jwks.issuer)


@dataclass
class TokenRequests:
    """The job's token endpoint: `GET <url>&audience=<aud>` with `Authorization: bearer <request token>` answers
    `{"value": "<jwt>"}`, minted by `mint(audience)`; every request is counted, every token remembered."""

    mint: Callable[[str], str]
    request_token: str = field(default_factory=lambda: secrets.token_hex(20))
    asked: list[dict[str, str]] = field(default_factory=list)
    status: int = 200

    def __post_init__(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                audience = query.get("audience", [""])[0]
                service.asked.append({"audience": audience, "authorization": self.headers.get("Authorization", "")})
                status, body = service.status, b'{"message": "unavailable"}'
                if self.headers.get("Authorization") != f"bearer {service.request_token}":
                    status, body = 401, b'{"message": "Bad credentials"}'
                elif status == 200:
                    body = json.dumps({"count": 1, "value": service.mint(audience)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = lab.LoopbackHttp(Handler)

    @property
    def url(self) -> str:
        """As GitHub sets it: already carrying a query, so the client appends `&audience=`."""
        return f"{self._http.url}/_apis/idtoken?api-version=2.0"

    def environ(self) -> dict[str, str]:
        return {"ACTIONS_ID_TOKEN_REQUEST_URL": self.url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token}

    def close(self) -> None:
        self._http.close()


def job_token(issuer: GithubIssuer, key: Key, **claims: Any) -> Callable[[str], str]:
    """A mint for TokenRequests: the token a deploy job in GitHub would get, for the audience it asks for."""
    return lambda audience: issuer.sign(key, issuer.claims(aud=audience, **claims))
