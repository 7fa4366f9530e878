"""`deployplan check --github`: the repository settings the deploy model relies on, read through GitHub's API.

Environments dev and prod exist; prod has a required reviewer; each environment deploys only from protected
branches or listed refs; each has every secret deploy.yml maps; the default branch requires reviews by code
owners; CODEOWNERS names real owners. Each API error says what the token lacks.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any

import yaml

from runner.cli.githubapi import GitHubApi, GitHubError
from runner.cli.preflight import Check, fail, ok, warn
from runner.cli.workflowcheck import DEFAULT_PATH as WORKFLOW
from runner.core.envschema import EnvSchema

ENVIRONMENTS = ("dev", "prod")
_SECRET_REF = re.compile(r"^\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_GONE = ("GitHub answered 404", "check the repository name and the token's repository access")
_PLACEHOLDER = re.compile(r"@OWNER(/|$)|<[^>]*>|replace-with", re.IGNORECASE)


def github_checks(api: GitHubApi, *, workflow: Path, schema: EnvSchema | None) -> list[Check]:
    try:
        repo = api.get(api.repo_path())
    except GitHubError as e:
        return [
            _error(
                "github",
                e,
                f"the repository {api.repository}",
                "Metadata",
                (f"no repository {api.repository}", "check --repository and the token's repository access"),
            )
        ]
    checks = [ok("github", f"{api.repository} read through {api.base}")]
    secrets, optional = mapped_secrets(workflow, schema)
    for env in ENVIRONMENTS:
        checks += _environment(api, env, secrets=secrets, optional=optional)
    checks.append(_default_branch(api, str(repo.get("default_branch"))))
    checks.append(_codeowners(api))
    return checks


def mapped_secrets(workflow: Path, schema: EnvSchema | None) -> tuple[list[str], set[str]]:
    """The secret names deploy.yml maps into any step's env, and those that feed an optional runtime variable."""
    try:
        data = yaml.safe_load(workflow.read_text("utf-8"))
    except (OSError, yaml.YAMLError):
        return [], set()
    names: dict[str, str] = {}
    for job in (data or {}).get("jobs", {}).values() if isinstance(data, dict) else []:
        for step in job.get("steps", []) if isinstance(job, dict) else []:
            for variable, value in ((step.get("env") or {}) if isinstance(step, dict) else {}).items():
                found = _SECRET_REF.match(str(value))
                if found:
                    names[found.group(1)] = str(variable)
    optional_vars = {v.name for v in schema.variables if not v.required} if schema else set()
    return sorted(names), {secret for secret, variable in names.items() if variable in optional_vars}


def required_reviewers(environment: dict[str, Any]) -> list[dict[str, Any]]:
    """The reviewers of the environment's required_reviewers protection rule (empty when it has none)."""
    rules = environment.get("protection_rules") or []
    return [r for rule in rules if rule.get("type") == "required_reviewers" for r in rule.get("reviewers") or []]


def prod_bypasses(environment: dict[str, Any]) -> list[Check]:
    """Ways around prod's reviewers that GitHub allows unless told not to: warnings, the deploy model's advice."""
    where = "Settings > Environments > prod"
    rules = [r for r in environment.get("protection_rules") or [] if r.get("type") == "required_reviewers"]
    checks = []
    if rules and not all(r.get("prevent_self_review") is True for r in rules):
        checks.append(
            warn("prod self-review", "whoever starts a prod deploy may approve it", f"{where}: Prevent self-review")
        )
    if environment.get("can_admins_bypass") is not False:
        checks.append(
            warn(
                "prod admin bypass",
                "administrators may deploy to prod without the reviewers",
                f"{where}: clear 'Allow administrators to bypass configured protection rules'",
            )
        )
    return checks


def branch_policy_verdict(env: str, policy: Any, custom: list[dict[str, Any]] | None) -> Check:
    """Only protected branches, or listed refs (none of them a catch-all pattern); anything else is a FAIL."""
    name = f"{env} branches"
    fix = f"Settings > Environments > {env} > Deployment branches and tags: 'Protected branches only', or selected ones"
    if not isinstance(policy, dict):
        return fail(name, f"any branch or tag may deploy to {env} (no deployment branch policy)", fix)
    if policy.get("protected_branches") is True:
        return ok(name, f"only protected branches may deploy to {env}")
    if policy.get("custom_branch_policies") is True and custom is not None:
        refs = [f"{p.get('type', 'branch')} {p.get('name')}" for p in custom]
        if not refs:
            return fail(name, f"the selected list is empty: nothing may deploy to {env}", fix)
        if any(str(p.get("name")).strip("*/") == "" for p in custom):
            return fail(name, f"a pattern that matches every ref may deploy to {env}: {', '.join(refs)}", fix)
        return ok(name, f"only these may deploy to {env}: {', '.join(refs)}")
    return fail(name, f"the deployment branch policy of {env} limits nothing ({policy})", fix)


def codeowners_verdict(text: str) -> Check:
    """Every owner is real: none of them the shipped placeholder; at least one rule names an owner."""
    owners = [
        word
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
        for word in line.split()[1:]
    ]
    placeholders = sorted({o for o in owners if _PLACEHOLDER.search(o)})
    fix = "replace it in .github/CODEOWNERS with a real team or users with write access, by a reviewed pull request"
    if placeholders:
        return fail("codeowners", f"names the placeholder owner {', '.join(placeholders)}: no review is required", fix)
    if not owners:
        return fail("codeowners", "names no owner: no review is required", fix)
    return ok("codeowners", f"owners: {', '.join(sorted(set(owners)))}")


def _environment(api: GitHubApi, env: str, *, secrets: list[str], optional: set[str]) -> list[Check]:
    try:
        found = api.get(api.repo_path("environments", env))
    except GitHubError as e:
        missing = (
            f"the environment {env} does not exist: the deploy job would create it with no rules and no secrets",
            f"Settings > Environments > New environment: {env}",
        )
        return [_error(f"{env} environment", e, f"the environment {env}", "Actions", missing)]
    checks = [ok(f"{env} environment", "exists")]
    reviewers = required_reviewers(found)
    if reviewers:
        checks.append(ok(f"{env} reviewers", f"{len(reviewers)} required reviewer(s)"))
    elif env == "prod":
        checks.append(
            fail(
                "prod reviewers",
                "prod has no required reviewer: any deploy job runs at once",
                "Settings > Environments > prod > Required reviewers: add at least one person or team",
            )
        )
    else:
        checks.append(ok(f"{env} reviewers", "none (dev deploys without approval)"))
    if env == "prod":
        checks += prod_bypasses(found)
    checks.append(_branches(api, env, found.get("deployment_branch_policy")))
    checks += _secrets(api, env, secrets=secrets, optional=optional)
    return checks


def _branches(api: GitHubApi, env: str, policy: Any) -> Check:
    custom = None
    if isinstance(policy, dict) and policy.get("custom_branch_policies") is True:
        try:
            custom = api.get(api.repo_path("environments", env, "deployment-branch-policies")).get("branch_policies")
        except GitHubError as e:
            return _error(f"{env} branches", e, f"the deployment branch policies of {env}", "Actions", _GONE)
    return branch_policy_verdict(env, policy, custom)


def _secrets(api: GitHubApi, env: str, *, secrets: list[str], optional: set[str]) -> list[Check]:
    if not secrets:  # no deploy.yml here, or one that maps no secret: nothing to compare with, not "all set"
        reason = f"{WORKFLOW} maps no secret here (missing or unreadable): the secrets of {env} were not compared"
        return [warn(f"{env} secrets", reason, f"run check from the repository's root, where {WORKFLOW} is")]
    try:
        found = api.get(api.repo_path("environments", env, "secrets") + "?per_page=100")
    except GitHubError as e:
        return [_error(f"{env} secrets", e, f"the secrets of {env}", "Environments' and 'Secrets", _GONE)]
    have = {s.get("name") for s in found.get("secrets") or []}
    checks = []
    missing = [s for s in secrets if s not in have and s not in optional]
    if missing:
        checks.append(
            fail(
                f"{env} secrets",
                f"missing in the environment {env}: {', '.join(missing)} (they would arrive as empty strings)",
                f"Settings > Environments > {env} > Environment secrets: add {', '.join(missing)}",
            )
        )
    else:
        unset = sorted(optional - have)
        note = f" ({', '.join(unset)} optional, not set)" if unset else ""
        checks.append(ok(f"{env} secrets", f"all {len(secrets) - len(unset)} secrets deploy.yml maps are set{note}"))
    return checks


def _default_branch(api: GitHubApi, branch: str) -> Check:
    name = "default branch"
    fix = (
        f"Settings > Branches > {branch}: require a pull request with approvals and review from Code Owners "
        "(rulesets are not read by this check)"
    )
    try:
        protection = api.get(api.repo_path("branches", branch, "protection"))
    except GitHubError as e:
        return _error(name, e, f"the protection of {branch}", "Administration", (f"{branch} is not protected", fix))
    reviews = protection.get("required_pull_request_reviews")
    if not isinstance(reviews, dict):
        return fail(name, f"{branch} is protected but requires no pull request review", fix)
    if reviews.get("require_code_owner_reviews") is not True:
        return fail(name, f"{branch} requires reviews, but not from code owners", fix)
    count = reviews.get("required_approving_review_count", 0)
    if not count:
        return fail(name, f"{branch} requires 0 approving reviews", fix)
    return ok(name, f"{branch} requires {count} approving review(s), from code owners")


def _codeowners(api: GitHubApi) -> Check:
    try:
        found = api.get(api.repo_path("contents", ".github", "CODEOWNERS"))
    except GitHubError as e:
        return _error(
            "codeowners",
            e,
            ".github/CODEOWNERS",
            "Contents",
            ("there is no .github/CODEOWNERS on the default branch", "add it"),
        )
    try:
        text = base64.b64decode(str(found.get("content", ""))).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return fail("codeowners", "GitHub's copy of .github/CODEOWNERS is not base64 UTF-8 text", "check the file")
    return codeowners_verdict(text)


def _error(name: str, error: GitHubError, what: str, permission: str, missing: tuple[str, str]) -> Check:
    """An API error as what it means for this setting; `missing` is what a 404 means here, and its fix."""
    if error.status == 401:
        return fail(name, "GitHub did not accept the token (expired or revoked?)", "set GH_TOKEN to a valid token")
    if error.status == 403:
        wants = f" (GitHub wants: {error.accepted})" if error.accepted else ""
        return fail(
            name,
            f"this token cannot read {what}: {error.message}{wants}",
            f"give the fine-grained token '{permission}: read' on this repository (docs/first-deploy.md)",
        )
    if error.status == 404:
        return fail(name, f"{missing[0]} (or this token cannot see it)", missing[1])
    return fail(name, f"GitHub answered {error}", "retry; check GITHUB_API_URL")
