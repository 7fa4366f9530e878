"""What a GitHub Actions OIDC token's claims must say to deploy here, and what of them an audit record keeps.

Plain data in, plain data out: the verifier in `agent.oidc` checks the signature and the times first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config import GithubOidc
from runner.core.text import shorten

EVENT = "workflow_dispatch"
# The claims a refusal's audit record and a deployment's record keep (never the token): the ones checked, and
# the ones that say which run it was.
AUDITED = (
    "iss",
    "aud",
    "sub",
    "exp",
    "iat",
    "nbf",
    "jti",
    "repository",
    "repository_id",
    "repository_owner",
    "event_name",
    "environment",
    "workflow_ref",
    "job_workflow_ref",
    "ref",
    "sha",
    "actor",
    "actor_id",
    "run_id",
    "run_number",
    "run_attempt",
)
MAX_CLAIM = 300


def refusals(claims: Mapping[str, Any], s: GithubOidc, environment: str) -> list[tuple[str, str]]:
    """Every claim that does not allow this deploy, in SPEC's order, each naming what it holds and what it must."""

    def held(name: str) -> str:
        return "is missing" if name not in claims else f"is {shorten(str(claims[name]), 120)!r}"

    found: list[tuple[str, str]] = []
    repository = claims.get("repository")
    if not isinstance(repository, str) or repository.casefold() != s.repository.casefold():
        found.append(
            (
                "repository",
                f"repository {held('repository')}, expected {s.repository!r} (DEPLOY_AGENT_GITHUB_REPOSITORY)",
            )
        )
    if str(claims.get("repository_id")) != s.repository_id:
        found.append(
            (
                "repository_id",
                f"repository_id {held('repository_id')}, expected {s.repository_id!r} "
                "(DEPLOY_AGENT_GITHUB_REPOSITORY_ID: a repository of the same name that was deleted and created "
                "again has another id)",
            )
        )
    if claims.get("event_name") != EVENT:
        found.append(
            ("event_name", f"event_name {held('event_name')}, expected {EVENT!r}: deploys are started by hand only")
        )
    if claims.get("environment") != environment:
        found.append(
            (
                "environment",
                f"environment {held('environment')}, expected {environment!r}: the deploy job must run in the GitHub "
                "Environment named like the target",
            )
        )
    ref = claims.get("ref")
    expected_ref = ref if isinstance(ref, str) and ref in s.refs else None
    if expected_ref is None:
        found.append(("ref", f"ref {held('ref')}, expected one of {', '.join(s.refs)} (DEPLOY_AGENT_GITHUB_REFS)"))
    workflow_ref = claims.get("workflow_ref")
    wanted = f"{s.repository}/{s.workflow}@{expected_ref or s.refs[0]}"
    if not _same_workflow(workflow_ref, wanted):
        found.append(
            (
                "workflow_ref",
                f"workflow_ref {held('workflow_ref')}, expected {wanted!r} (DEPLOY_AGENT_GITHUB_WORKFLOW and _REFS)",
            )
        )
    return found


def _same_workflow(given: Any, wanted: str) -> bool:
    """`owner/repo/.github/workflows/x.yml@ref`: the repository part compared as GitHub does (case-insensitively)."""
    if not isinstance(given, str):
        return False
    owner_repo, _, rest = wanted.partition("/")
    repo, _, path = rest.partition("/")
    prefix = f"{owner_repo}/{repo}/"
    return given[: len(prefix)].casefold() == prefix.casefold() and given[len(prefix) :] == path


def audited(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims an audit record keeps: the known ones only, each value bounded (a forged token may hold MBs)."""
    kept: dict[str, Any] = {}
    for name in AUDITED:
        if name not in claims:
            continue
        value = claims[name]
        if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
            kept[name] = value
        elif isinstance(value, list):
            kept[name] = [shorten(str(v), MAX_CLAIM) for v in value[:5]]
        else:
            kept[name] = shorten(str(value), MAX_CLAIM)
    return kept
