"""GitHub's REST API, played on loopback: the few GET endpoints `deployplan check --github` reads, answering with
the response shapes GitHub documents (trimmed to the fields that matter, names exactly as documented).

A fine-grained token's permissions are modelled: an endpoint the token lacks the permission for answers 403
"Resource not accessible by personal access token" with the X-Accepted-GitHub-Permissions header, as GitHub does.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import lab

TOKEN = "github_pat_" + "F" * 70
OWNER_REPO = "acme/trader"
# Every permission the check needs, read only; a test takes some away.
ALL_PERMISSIONS = {"metadata", "actions", "environments", "secrets", "administration", "contents"}
SECRETS = ("DEPLOY_AGENT_URL", "CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET")
RUNTIME_SECRETS = ("RUNTIME_ENV", "RUNTIME_LOG_LEVEL", "RUNTIME_API_TOKEN")
CODEOWNERS = "# owners\n/plans/ @acme/deploy-owners\n/.github/CODEOWNERS @acme/deploy-owners\n"


def reviewer_rule(login: str = "octocat") -> dict[str, Any]:
    return {
        "id": 3755,
        "node_id": "MDQ6R2F0ZTM3NTU=",
        "prevent_self_review": True,
        "type": "required_reviewers",
        "reviewers": [{"type": "User", "reviewer": {"login": login, "id": 1, "type": "User"}}],
    }


@dataclass
class Repository:
    """The settings a well set-up repository has; a test changes what it needs."""

    default_branch: str = "main"
    environments: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "dev": {
                "protection_rules": [],
                "deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": False},
            },
            "prod": {
                "protection_rules": [
                    reviewer_rule(),
                    {"id": 3756, "node_id": "MDQ6R2F0ZTM3NTY=", "type": "branch_policy"},
                ],
                "deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True},
            },
        }
    )
    branch_policies: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "prod": [
                {"id": 361471, "node_id": "MDE2OkdhdGVCcmFuY2hQb2xpY3kzNjE0NzE=", "name": "main", "type": "branch"}
            ]
        }
    )
    secrets: dict[str, list[str]] = field(
        default_factory=lambda: {"dev": [*SECRETS, *RUNTIME_SECRETS], "prod": [*SECRETS, *RUNTIME_SECRETS]}
    )
    protection: dict[str, Any] | None = field(
        default_factory=lambda: {
            "required_pull_request_reviews": {
                "dismiss_stale_reviews": True,
                "require_code_owner_reviews": True,
                "required_approving_review_count": 1,
                "require_last_push_approval": False,
            },
            "enforce_admins": {"enabled": True},
        }
    )
    codeowners: str | None = CODEOWNERS
    permissions: set[str] = field(default_factory=lambda: set(ALL_PERMISSIONS))
    moved_to: str | None = None  # a renamed repository: GitHub answers 301 with the new location


# (pattern, the fine-grained permission GitHub documents for it)
_ROUTES = [
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)$"), "metadata"),
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/environments/(?P<env>[^/]+)$"), "actions"),
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/environments/(?P<env>[^/]+)/deployment-branch-policies$"), "actions"),
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/environments/(?P<env>[^/]+)/secrets$"), "secrets"),
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/branches/(?P<branch>[^/]+)/protection$"), "administration"),
    (re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/contents/\.github/CODEOWNERS$"), "contents"),
]


class FakeGitHub:
    """Serves one repository's settings to one token; remembers every path asked for."""

    def __init__(self, repository: Repository | None = None, *, owner_repo: str = OWNER_REPO) -> None:
        self.repository = repository or Repository()
        self.owner_repo = owner_repo
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.paths.append(self.path)
                status, body, headers = fake.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = lab.LoopbackHttp(Handler)

    @property
    def url(self) -> str:
        return self._http.url

    def close(self) -> None:
        self._http.close()

    def answer(self, raw_path: str, authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        if authorization != f"Bearer {TOKEN}":
            return 401, _error("Bad credentials", 401), {}
        path, _, _ = raw_path.partition("?")
        if self.repository.moved_to is not None:
            moved = {"message": "Moved Permanently", "url": self.repository.moved_to}
            return 301, moved, {"Location": self.repository.moved_to}
        for pattern, permission in _ROUTES:
            found = pattern.match(path)
            if not found:
                continue
            if found.group("repo") != self.owner_repo:
                return 404, _error("Not Found", 404), {}
            if permission not in self.repository.permissions:
                message = "Resource not accessible by personal access token"
                return 403, _error(message, 403), {"X-Accepted-GitHub-Permissions": f"{permission}=read"}
            return self._serve(path, found.groupdict())
        return 404, _error("Not Found", 404), {}

    def _serve(self, path: str, parts: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        repo = self.repository
        env = parts.get("env")
        if path == f"/repos/{self.owner_repo}":
            return (
                200,
                {
                    "id": 1296269,
                    "name": "trader",
                    "full_name": self.owner_repo,
                    "default_branch": repo.default_branch,
                    "private": True,
                },
                {},
            )
        if env is not None and env not in repo.environments:
            return 404, _error("Not Found", 404), {}
        if path.endswith("/deployment-branch-policies"):
            policies = repo.branch_policies.get(str(env), [])
            return 200, {"total_count": len(policies), "branch_policies": policies}, {}
        if path.endswith("/secrets"):
            names = repo.secrets.get(str(env), [])
            stamp = "2026-01-10T14:59:22Z"
            return (
                200,
                {
                    "total_count": len(names),
                    "secrets": [{"name": n, "created_at": stamp, "updated_at": stamp} for n in names],
                },
                {},
            )
        if env is not None:
            return (
                200,
                {
                    "id": 161088068,
                    "node_id": "MDExOkVudmlyb25tZW50MTYxMDg4MDY4",
                    "name": env,
                    "can_admins_bypass": False,
                    **repo.environments[env],
                },
                {},
            )
        if path.endswith("/protection"):
            if parts["branch"] != repo.default_branch or repo.protection is None:
                return 404, _error("Branch not protected", 404), {}
            return 200, {"url": f"https://api.github.com{path}", **repo.protection}, {}
        if repo.codeowners is None:
            return 404, _error("Not Found", 404), {}
        content = base64.encodebytes(repo.codeowners.encode()).decode()  # GitHub wraps it in lines, as here
        return (
            200,
            {
                "type": "file",
                "encoding": "base64",
                "name": "CODEOWNERS",
                "path": ".github/CODEOWNERS",
                "content": content,
            },
            {},
        )


def _error(message: str, status: int) -> dict[str, str]:
    return {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
