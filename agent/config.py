"""The agent's configuration: environment variables only, all required, no defaults; the one place that reads them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.variables import strict_problems
from agent.volumes import Mount, missing_sources, parse_volumes, protected_paths
from runner.core.facts import Target
from runner.core.render import ENVIRONMENTS
from runner.core.secrets import Secret

RESTART_POLICIES = ("no", "on-failure", "unless-stopped", "always")
AUTH_MODES = ("cloudflare-access", "token")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_IMAGE_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+/runtime"
)
_TEAM_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_CERTS_URL = re.compile(r"https://[^\s/]+/\S*|http://127\.0\.0\.1(?::[0-9]{1,5})?/\S*")
MIN_TOKEN_LENGTH = 32
_LOG_SIZE = re.compile(r"[1-9][0-9]{0,5}[kmg]")


class ConfigError(Exception):
    """The agent's configuration is incomplete or invalid; names every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the deploy agent cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Environment:
    """What the server owns for one environment."""

    name: str
    container: str
    volumes: tuple[Mount, ...]

    @property
    def volumes_variable(self) -> str:
        """The server's variable that owns this environment's mounts."""
        return f"DEPLOY_AGENT_VOLUMES_{self.name.upper()}"

    def missing_sources(self) -> list[str]:
        """A line per bind source of this environment that is not there (volumes.missing_sources)."""
        return missing_sources(self.volumes_variable, self.volumes)


@dataclass(frozen=True)
class GithubOidc:
    """What a deploy job's GitHub Actions OIDC token must say (DEPLOY_AGENT_GITHUB_*)."""

    issuer: str
    audience: str
    repository: str
    repository_id: str
    workflow: str
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    """Everything the agent needs, validated once at startup."""

    bind: str
    state_dir: Path
    environments: dict[str, Environment]
    image_repository: str
    restart_policy: str
    # The runtime container's Docker LogConfig; None: the daemon's own configured driver.
    runtime_logs: dict[str, Any] | None
    auth: Literal["cloudflare-access", "token"]
    # Who may deploy to each environment (Access identities, casefolded); None with token auth: the token may.
    deployers: dict[str, frozenset[str]] | None
    token: Secret | None
    access_team_domain: str | None
    access_aud: str | None
    access_certs_url: str | None
    registry_username: str | None
    registry_password: Secret | None
    # Where Docker is (DOCKER_HOST, else the local socket), and whether it takes TLS: the SDK's client finds
    # Docker the standard way itself; the lean reader of status reads needs to know.
    docker_host: str | None = None
    docker_tls: bool = False
    # DEPLOY_AGENT_GITHUB_OIDC: with `required`, every real deploy carries the deploy job's GitHub OIDC token,
    # checked against these settings (None with `off`).
    github_oidc: Literal["required", "off"] = "off"
    github: GithubOidc | None = None

    def target(self, environment: str) -> Target:
        """Everything the server owns for one served environment, as the step builders read it."""
        served = self.environments[environment]
        return Target(
            environment=environment,
            container=served.container,
            binds=tuple(m.bind() for m in served.volumes),
            restart_policy=self.restart_policy,
            log_config=self.runtime_logs,
        )


def load_config(environ: Mapping[str, str], *, check_sources: bool = True) -> Config:
    """Build the Config from the environment, or raise ConfigError naming every missing or invalid variable, every
    `DEPLOY_AGENT_*` name the agent does not know, every placeholder left from the example and every mount source
    that is not there (`check_sources=False`: all but the last, which `deploy-agent check` reports on its own)."""
    problems: list[str] = []

    def need(name: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            problems.append(f"{name} is not set")
        return value

    bind = need("DEPLOY_AGENT_BIND")
    if bind and not re.fullmatch(r"[^\s:]+:[0-9]{1,5}|\[[0-9a-fA-F:]+\]:[0-9]{1,5}", bind):
        problems.append(f"DEPLOY_AGENT_BIND={bind!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    state_dir = need("DEPLOY_AGENT_STATE_DIR")
    if state_dir and not Path(state_dir).is_absolute():
        problems.append(f"DEPLOY_AGENT_STATE_DIR={state_dir!r} must be an absolute path")
    protected = protected_paths(state_dir, environ)
    environments = _environments(need("DEPLOY_AGENT_ENVIRONMENTS"), environ, problems, protected)
    if check_sources:
        for served in environments.values():
            problems += served.missing_sources()
    repository = need("DEPLOY_AGENT_IMAGE_REPOSITORY")
    if repository and not _IMAGE_REPOSITORY.fullmatch(repository):
        problems.append(
            f"DEPLOY_AGENT_IMAGE_REPOSITORY={repository!r} must be a lowercase <registry>/<path>/runtime "
            "repository without tag, e.g. ghcr.io/acme/trader/runtime"
        )
    restart = need("DEPLOY_AGENT_RESTART_POLICY")
    if restart and restart not in RESTART_POLICIES:
        problems.append(f"DEPLOY_AGENT_RESTART_POLICY={restart!r} must be one of {', '.join(RESTART_POLICIES)}")
    runtime_logs = _runtime_logs(need("DEPLOY_AGENT_RUNTIME_LOGS"), problems)
    auth = _auth(need, environ, environments, problems)
    github_oidc, github = _github_oidc(need, problems)
    username = environ.get("DEPLOY_AGENT_REGISTRY_USERNAME", "")
    password = environ.get("DEPLOY_AGENT_REGISTRY_PASSWORD", "")
    if bool(username) != bool(password):
        problems.append(
            "DEPLOY_AGENT_REGISTRY_USERNAME and DEPLOY_AGENT_REGISTRY_PASSWORD go together: set both or neither"
        )
    problems += strict_problems(environ, served=environments, all_environments=ENVIRONMENTS)
    if problems:
        raise ConfigError(problems)
    return Config(
        bind=bind,
        state_dir=Path(state_dir),
        environments=environments,
        image_repository=repository,
        restart_policy=restart,
        runtime_logs=runtime_logs,
        **auth,
        registry_username=username or None,
        registry_password=Secret(password) if password else None,
        docker_host=environ.get("DOCKER_HOST") or None,
        docker_tls=bool(environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH")),
        github_oidc=github_oidc,
        github=github,
    )


def _auth(
    need: Callable[[str], str], environ: Mapping[str, str], environments: dict[str, Environment], problems: list[str]
) -> dict[str, Any]:
    """The authentication (and, with Access, authorization) settings, as Config fields."""
    auth = need("DEPLOY_AGENT_AUTH")
    found: dict[str, Any] = {
        "auth": auth,
        "token": None,
        "deployers": None,
        "access_team_domain": None,
        "access_aud": None,
        "access_certs_url": None,
    }
    if auth == "token":
        token = need("DEPLOY_AGENT_TOKEN")
        if token and len(token) < MIN_TOKEN_LENGTH:
            problems.append(f"DEPLOY_AGENT_TOKEN is too short: use at least {MIN_TOKEN_LENGTH} random characters")
        found["token"] = Secret(token) if token else None
    elif auth == "cloudflare-access":
        team, aud = need("DEPLOY_AGENT_ACCESS_TEAM_DOMAIN"), need("DEPLOY_AGENT_ACCESS_AUD")
        if team and not _TEAM_DOMAIN.fullmatch(team):
            problems.append(
                f"DEPLOY_AGENT_ACCESS_TEAM_DOMAIN={team!r} must be a host name like acme.cloudflareaccess.com"
            )
        certs_url = environ.get("DEPLOY_AGENT_ACCESS_CERTS_URL", "")
        if certs_url and not _CERTS_URL.fullmatch(certs_url):
            problems.append(
                f"DEPLOY_AGENT_ACCESS_CERTS_URL={certs_url!r} must be an https:// URL (http:// only on 127.0.0.1)"
            )
        found.update(
            deployers=_deployers(environments, environ, problems),
            access_team_domain=team,
            access_aud=aud,
            access_certs_url=certs_url or (f"https://{team}/cdn-cgi/access/certs" if team else None),
        )
    elif auth:
        problems.append(f"DEPLOY_AGENT_AUTH={auth!r} must be one of {', '.join(AUTH_MODES)}")
    return found


def _runtime_logs(value: str, problems: list[str]) -> dict[str, Any] | None:
    """`max-size=SIZE,max-file=N` (json-file with those options) or `daemon` (the daemon's own driver)."""
    if not value or value == "daemon":
        return None
    pairs = [item.strip().partition("=")[::2] for item in value.split(",")]
    options = dict(pairs)
    size, files = options.get("max-size", ""), options.get("max-file", "")
    well_formed = len(options) == len(pairs) == 2 and _LOG_SIZE.fullmatch(size)
    if not (well_formed and files.isascii() and files.isdigit() and 1 <= int(files) <= 100):
        problems.append(
            f"DEPLOY_AGENT_RUNTIME_LOGS={value!r} must be 'max-size=SIZE,max-file=N' (SIZE like 50m, 10k or 1g; "
            "N from 1 to 100; both required) for rotated json-file logs, or 'daemon' for the Docker daemon's own "
            "log driver"
        )
        return None
    return {"Type": "json-file", "Config": {"max-size": size, "max-file": files}}


def _deployers(
    environments: dict[str, Environment], environ: Mapping[str, str], problems: list[str]
) -> dict[str, frozenset[str]]:
    found = {}
    for name in environments:
        variable = f"DEPLOY_AGENT_DEPLOYERS_{name.upper()}"
        listed = frozenset(i.strip().casefold() for i in environ.get(variable, "").split(",") if i.strip())
        if not listed:
            problems.append(
                f"{variable} is not set: with cloudflare-access, list who may deploy to {name} (service-token "
                "common names, emails), comma-separated; everyone else Access lets in may only read and dry-run"
            )
        found[name] = listed
    return found


def _environments(
    value: str, environ: Mapping[str, str], problems: list[str], protected: dict[str, str]
) -> dict[str, Environment]:
    names = [n.strip() for n in value.split(",")] if value else []
    served: dict[str, Environment] = {}
    for name in names:
        if name not in ENVIRONMENTS:
            problems.append(
                f"DEPLOY_AGENT_ENVIRONMENTS: {name!r} is not an environment; use {' and/or '.join(ENVIRONMENTS)}"
            )
            continue
        if name in served:
            problems.append(f"DEPLOY_AGENT_ENVIRONMENTS lists {name!r} twice")
            continue
        container_var, volumes_var = f"DEPLOY_AGENT_CONTAINER_{name.upper()}", f"DEPLOY_AGENT_VOLUMES_{name.upper()}"
        container = environ.get(container_var, "").strip()
        if not container:
            problems.append(f"{container_var} is not set (the container name for {name})")
        elif not _CONTAINER_NAME.fullmatch(container):
            problems.append(f"{container_var}={container!r} is not a valid container name")
        volumes = parse_volumes(volumes_var, environ.get(volumes_var, "").strip(), problems, protected)
        served[name] = Environment(name=name, container=container, volumes=volumes)
    containers = [e.container for e in served.values() if e.container]
    if len(set(containers)) != len(containers):
        problems.append("each environment needs its own container name (DEPLOY_AGENT_CONTAINER_<ENV>)")
    return served


# The variables DEPLOY_AGENT_GITHUB_OIDC=required needs; none of them is read with `off`.
GITHUB_OIDC_VARIABLES = (
    "DEPLOY_AGENT_GITHUB_ISSUER",
    "DEPLOY_AGENT_GITHUB_AUDIENCE",
    "DEPLOY_AGENT_GITHUB_REPOSITORY",
    "DEPLOY_AGENT_GITHUB_REPOSITORY_ID",
    "DEPLOY_AGENT_GITHUB_WORKFLOW",
    "DEPLOY_AGENT_GITHUB_REFS",
)
_ISSUER = re.compile(r"https://[^\s/?#]+(?:/[^\s?#]*)?|http://127\.0\.0\.1(?::[0-9]{1,5})?(?:/[^\s?#]*)?")
_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_WORKFLOW = re.compile(r"\.github/workflows/[A-Za-z0-9_.-]+\.ya?ml")
_REF = re.compile(r"refs/(?:heads|tags)/[^\s,~^:?*\[\\]+")


def _github_oidc(
    need: Callable[[str], str], problems: list[str]
) -> tuple[Literal["required", "off"], GithubOidc | None]:
    """DEPLOY_AGENT_GITHUB_OIDC (`required` or `off`, written out) and, with `required`, what the token must say."""
    mode = need("DEPLOY_AGENT_GITHUB_OIDC")
    if mode == "off":
        return "off", None
    if mode != "required":
        if mode:
            problems.append(
                f"DEPLOY_AGENT_GITHUB_OIDC={mode!r} must be 'required' (every deploy carries the deploy job's GitHub "
                "OIDC token) or 'off'"
            )
        return "off", None
    before = len(problems)
    issuer, audience, repository, repository_id, workflow, refs = (need(n) for n in GITHUB_OIDC_VARIABLES)
    issuer = issuer.rstrip("/")
    if issuer and not _ISSUER.fullmatch(issuer):
        problems.append(
            f"DEPLOY_AGENT_GITHUB_ISSUER={issuer!r} must be an https:// URL (http:// only on 127.0.0.1), "
            "e.g. https://token.actions.githubusercontent.com"
        )
    if repository and not _GITHUB_REPOSITORY.fullmatch(repository):
        problems.append(f"DEPLOY_AGENT_GITHUB_REPOSITORY={repository!r} must be OWNER/REPO, e.g. acme/trader")
    if repository_id and not (repository_id.isascii() and repository_id.isdigit()):
        problems.append(
            f"DEPLOY_AGENT_GITHUB_REPOSITORY_ID={repository_id!r} must be the repository's numeric id "
            "(gh api repos/OWNER/REPO --jq .id)"
        )
    if workflow and not _WORKFLOW.fullmatch(workflow):
        problems.append(
            f"DEPLOY_AGENT_GITHUB_WORKFLOW={workflow!r} must be the workflow file's path, e.g. "
            ".github/workflows/deploy.yml"
        )
    allowed = tuple(r.strip() for r in refs.split(",") if r.strip())
    wrong = [r for r in allowed if not _REF.fullmatch(r)]
    if wrong or (refs and not allowed):
        found = f"{', '.join(map(repr, wrong))} is not a full ref" if wrong else "names no ref"
        problems.append(
            f"DEPLOY_AGENT_GITHUB_REFS={refs!r} {found}: list full refs, comma-separated, e.g. refs/heads/main"
        )
    if len(problems) > before:
        return "required", None
    return "required", GithubOidc(
        issuer=issuer,
        audience=audience,
        repository=repository,
        repository_id=repository_id,
        workflow=workflow,
        refs=allowed,
    )
