"""`deployplan check`'s verdicts on the agent's answers: whoami, status, a dry run, the OIDC settings.

Plain data in (the answers as JSON objects), Check lines out; check.py asks the agent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.cli.oidc import what_to_change
from runner.cli.preflight import LOW_DISK, Check, fail, ok, warn
from runner.cli.report import readiness


def whoami(answer: Mapping[str, Any], *, env: str, repository: str | None) -> list[Check]:
    """Who the agent thinks we are, whether that identity may deploy ENV, whether ENV is served, and whether the
    plan's image repository is the one the agent deploys."""
    actor = answer.get("actor")
    checks = [ok("identity", f"the agent knows this caller as {actor!r}")]
    served = list(answer.get("environments") or [])
    variable = f"DEPLOY_AGENT_DEPLOYERS_{env.upper()}"
    if env not in served:
        checks.append(
            fail(
                "serves",
                f"the agent serves {', '.join(served) or 'no environment'}, not {env}",
                f"add {env} to DEPLOY_AGENT_ENVIRONMENTS on the server (with DEPLOY_AGENT_CONTAINER_{env.upper()}, "
                f"DEPLOY_AGENT_VOLUMES_{env.upper()} and {variable}), or deploy with the agent that serves it",
            )
        )
    else:
        checks.append(ok("serves", f"the agent serves {env}"))
    if (answer.get("may_deploy") or {}).get(env) is True:
        checks.append(ok("may deploy", f"{actor!r} may deploy {env}"))
    else:
        checks.append(
            fail(
                "may deploy",
                f"{actor!r} may not deploy {env}: a deploy would be refused with 403 after the reviewers approved",
                f"add {actor!r} (the service token's common name, exactly) to {variable} on the server and restart "
                "the agent; or use the service token that is listed there",
            )
        )
    theirs = answer.get("repository")
    if repository is None:
        checks.append(warn("repository", f"the agent deploys {theirs}; the plan did not render, so not compared"))
    elif theirs == repository:
        checks.append(ok("repository", f"the plan's image repository is the agent's ({theirs})"))
    else:
        checks.append(
            fail(
                "repository",
                f"the plan's image repository {repository} is not the agent's {theirs}: every deploy would be refused",
                "make DEPLOY_AGENT_IMAGE_REPOSITORY on the server and the plan's image (with --repository or "
                "GITHUB_REPOSITORY) name the same repository",
            )
        )
    return checks


def status(answer: Mapping[str, Any]) -> list[Check]:
    """The agent's Docker, audit chain, a deploy in progress, and disk, from GET /v1/status."""
    agent = answer.get("agent") or {}
    checks = []
    if agent.get("docker") == "reachable":
        checks.append(ok("docker", "the agent reaches its Docker Engine"))
    else:
        checks.append(
            fail(
                "docker",
                f"the agent's Docker Engine is {agent.get('docker')}",
                "on the server: start Docker, and check the agent's user may use its socket (deploy-agent check)",
            )
        )
    if agent.get("audit") == "ok":
        checks.append(ok("audit", "the audit chain is intact"))
    else:
        problem = agent.get("audit_problem") or agent.get("audit")
        checks.append(
            fail(
                "audit",
                f"the audit chain is broken ({problem}): the agent refuses every deploy",
                "on the server, find what changed the audit log (docs/agent.md, 'A broken audit chain')",
            )
        )
    running = agent.get("deploy_in_progress")
    if running:
        checks.append(warn("deploy in progress", f"deployment {running} is running: a deploy now gets 409"))
    checks.append(disk(agent.get("disk")))
    return checks


def disk(reported: Any) -> Check:
    """Free space where the agent keeps its state, when its status reports it."""
    if not isinstance(reported, Mapping) or not isinstance(reported.get("state_dir_free_bytes"), int):
        return warn("disk", "not reported by this agent's /v1/status; run `deploy-agent check` on the server")
    free = reported["state_dir_free_bytes"]
    text = f"{free / 1024**3:.1f} GiB free on the agent's state directory"
    if free < LOW_DISK:
        return warn("disk", f"{text} (under 1 GiB)", "free space on the server: `deployplan prune`, old logs")
    return ok("disk", text)


def dry_run(answer: Mapping[str, Any], *, tag: str) -> list[Check]:
    """The agent's dry run of this tag: does the registry have it (with the server's credentials), may we deploy."""
    ready = readiness(answer)
    environment = answer.get("environment")
    if ready.registry == "found":
        registry = ok("registry", f"the registry has {answer.get('image')} ({ready.said})")
    elif ready.registry == "missing":
        registry = fail(
            "registry",
            f"the server cannot pull tag {tag}: {ready.said}",
            f"push the image tagged {tag} (the runtime image workflow), or fix "
            "DEPLOY_AGENT_REGISTRY_USERNAME / DEPLOY_AGENT_REGISTRY_PASSWORD on the server",
        )
    else:  # busy (not asked) or an agent that does not ask: unsure, not a "no"
        registry = warn("registry", ready.said if ready.registry == "busy" else f"{ready.said}; the tag is not checked")
    if ready.may == "yes":
        verdict = ok("dry run", f"the agent accepts the plan for {environment}, and this caller may deploy it")
    elif ready.may == "token":  # the identity may deploy; the job's token may not
        verdict = fail(
            "dry run",
            "the agent would refuse this deploy job's GitHub OIDC token (a deploy would get 403): "
            + ready.token_reason,
            what_to_change(ready.token_reason),
        )
    elif ready.may == "identity":
        verdict = fail(
            "dry run",
            f"the agent answers that this caller may not deploy {environment}",
            "see the lines 'may deploy' and 'oidc' above",
        )
    else:
        verdict = ok("dry run", f"the agent accepts the plan for {environment} (it does not say may_deploy)")
    return [registry, verdict]


def dry_run_refused(code: str, text: str, details: Sequence[Mapping[str, Any]]) -> Check:
    """The agent's error answer to the dry run. A 503 `server_not_ready` names the server variable whose path is
    missing: a deploy now would get the same 503, after the reviewers approved."""
    text = "; ".join(line.strip() for line in text.splitlines())
    if code != "server_not_ready":
        return fail("dry run", text, "fix what the agent names")
    variables = sorted({str(d.get("path")) for d in details if str(d.get("path", "")).startswith("DEPLOY_AGENT_")})
    named = " / ".join(variables) or "DEPLOY_AGENT_VOLUMES_<ENV>"
    return fail(
        "dry run",
        text,
        f"on the server, create each missing mount source of {named} as named (owned by the runtime's user), or "
        "correct the variable and restart the agent; until then every deploy is refused with 503",
    )


def oidc(*, audience: str | None, agent_mode: str | None, in_actions: bool, request_vars: bool) -> list[Check]:
    """Does the CLI's DEPLOY_OIDC_AUDIENCE agree with the agent's DEPLOY_AGENT_GITHUB_OIDC, and could a token be
    asked for here. Nothing to check when neither side uses OIDC."""
    required = agent_mode == "required"
    if not audience and not required:
        return [ok("oidc", "neither the agent nor this job uses GitHub OIDC tokens")]
    if required and not audience:
        return [
            fail(
                "oidc",
                "the agent requires a GitHub OIDC token on every deploy, and DEPLOY_OIDC_AUDIENCE is not set here: "
                "the deploy would be refused with 401",
                "set the repository variable that deploy.yml maps to DEPLOY_OIDC_AUDIENCE to the agent's "
                "DEPLOY_AGENT_GITHUB_AUDIENCE",
            )
        ]
    checks = []
    if audience and agent_mode == "off":
        checks.append(
            warn(
                "oidc",
                f"DEPLOY_OIDC_AUDIENCE is {audience!r} but the agent does not check OIDC tokens "
                "(DEPLOY_AGENT_GITHUB_OIDC=off)",
                "set DEPLOY_AGENT_GITHUB_OIDC=required (and its DEPLOY_AGENT_GITHUB_* variables) on the server",
            )
        )
    if not in_actions:
        checks.append(warn("oidc token", "not in GitHub Actions: a token can only be asked for in the deploy job"))
    elif not request_vars:
        checks.append(
            fail(
                "oidc token",
                "ACTIONS_ID_TOKEN_REQUEST_URL / ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: this job cannot ask "
                "GitHub for a token",
                "give the deploy job `permissions: id-token: write`",
            )
        )
    return checks


def token_audience(token: str, audience: str, *, use: str) -> Check:
    """The token GitHub gave is addressed to the audience asked for (read, not verified: the agent verifies);
    `use` says what becomes of it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return fail(
            "oidc token", "GitHub answered with something that is not a JWT", "rerun; if it persists, report it"
        )
    aud = claims.get("aud") if isinstance(claims, dict) else None
    if aud == audience or (isinstance(aud, list) and audience in aud):
        return ok("oidc token", f"GitHub gives this job a token for {audience!r} ({use})")
    return fail(
        "oidc token", f"GitHub's token is for {aud!r}, not {audience!r}", "report it: GitHub ignored the audience"
    )
