"""The one table of the agent's variables, and the strict rules it drives: an unknown `DEPLOY_AGENT_*` name or a
value still holding a placeholder of the shipped example stops startup.

Adding a variable is one row here: every name in this table is known to the startup check, to `deploy-agent
check` and to the "did you mean" of a typo. A row whose name ends in `<ENV>` stands for one variable per served
environment (`DEPLOY_AGENT_CONTAINER_DEV`, `..._PROD`); it is known only for the environments the agent serves.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.core.text import quoted

PREFIX = "DEPLOY_AGENT_"
PER_ENVIRONMENT = "<ENV>"


@dataclass(frozen=True)
class Variable:
    """One variable the agent reads; `secret` values are never shown, not even in a complaint about them."""

    name: str
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("DEPLOY_AGENT_BIND"),
    Variable("DEPLOY_AGENT_STATE_DIR"),
    Variable("DEPLOY_AGENT_ENVIRONMENTS"),
    Variable("DEPLOY_AGENT_IMAGE_REPOSITORY"),
    Variable("DEPLOY_AGENT_CONTAINER_<ENV>"),
    Variable("DEPLOY_AGENT_VOLUMES_<ENV>"),
    Variable("DEPLOY_AGENT_RESTART_POLICY"),
    Variable("DEPLOY_AGENT_RUNTIME_LOGS"),
    Variable("DEPLOY_AGENT_AUTH"),
    Variable("DEPLOY_AGENT_ACCESS_TEAM_DOMAIN"),
    Variable("DEPLOY_AGENT_ACCESS_AUD"),
    Variable("DEPLOY_AGENT_ACCESS_CERTS_URL"),
    Variable("DEPLOY_AGENT_DEPLOYERS_<ENV>"),
    Variable("DEPLOY_AGENT_TOKEN", secret=True),
    Variable("DEPLOY_AGENT_REGISTRY_USERNAME"),
    Variable("DEPLOY_AGENT_REGISTRY_PASSWORD", secret=True),
    Variable("DEPLOY_AGENT_GITHUB_OIDC"),
    Variable("DEPLOY_AGENT_GITHUB_ISSUER"),
    Variable("DEPLOY_AGENT_GITHUB_AUDIENCE"),
    Variable("DEPLOY_AGENT_GITHUB_REPOSITORY"),
    Variable("DEPLOY_AGENT_GITHUB_REPOSITORY_ID"),
    Variable("DEPLOY_AGENT_GITHUB_WORKFLOW"),
    Variable("DEPLOY_AGENT_GITHUB_REFS"),
)

# DEPLOY_ names that belong to the CLI (an operator's shell may export them next to the agent's): not the agent's,
# and not a typo of one either.
IGNORED = frozenset({"DEPLOY_AGENT_URL"})

# What the shipped example (infra/agent.env.example) and the docs put where a value of yours belongs:
# `replace-with-...`, or a word or two in angle brackets (`<team>`, `<Client ID of github-deploy-dev>`).
_PLACEHOLDER = re.compile(r"replace-with|<[A-Za-z][A-Za-z0-9 _./-]*>", re.IGNORECASE)


def known_names(served: Iterable[str]) -> frozenset[str]:
    """Every variable name the agent reads when it serves these environments."""
    served = list(served)
    names: set[str] = set()
    for variable in VARIABLES:
        if variable.name.endswith(PER_ENVIRONMENT):
            names.update(variable.name.replace(PER_ENVIRONMENT, env.upper()) for env in served)
        else:
            names.add(variable.name)
    return frozenset(names)


def is_secret(name: str) -> bool:
    """Whether the named variable holds a secret (its value is never shown)."""
    return any(v.secret and _matches(v.name, name) for v in VARIABLES)


def strict_problems(environ: Mapping[str, str], *, served: Iterable[str], all_environments: Iterable[str]) -> list[str]:
    """One line per unknown `DEPLOY_AGENT_*` name (with the closest known one) and per placeholder value."""
    served = list(served)
    known = known_names(served)
    unserved = known_names(e for e in all_environments if e not in served) - known
    problems = []
    for name in sorted(n for n in environ if n.startswith(PREFIX) and n not in IGNORED):
        if name in unserved:
            env = name.rpartition("_")[2].lower()
            problems.append(
                f"{name} is set, but {env} is not served (DEPLOY_AGENT_ENVIRONMENTS): remove it, or serve {env}"
            )
        elif name not in known:
            close = _closest(name, known | unserved)
            hint = f"did you mean {close}?" if close else "the agent's variables are listed in docs/agent.md"
            problems.append(f"{name} is not a variable of the deploy agent: {hint} (a misspelled name is never read)")
        elif _PLACEHOLDER.search(environ[name]):
            shown = "" if is_secret(name) else f"={quoted(environ[name])}"
            problems.append(
                f"{name}{shown} still holds a placeholder of the example (replace-with-..., <...>): put the real "
                "value in its place"
            )
    return problems


def _closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like this one, compared without the prefix they all share (else all look alike)."""
    by_suffix = {n.removeprefix(PREFIX): n for n in known}
    found = difflib.get_close_matches(name.removeprefix(PREFIX), sorted(by_suffix), n=1, cutoff=0.6)
    return by_suffix[found[0]] if found else None


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith(PER_ENVIRONMENT):
        return name.startswith(pattern.removesuffix(PER_ENVIRONMENT))
    return pattern == name
