"""The agent's configuration: environment variables only, all required, no defaults; the one place that reads them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
# Where the Docker socket lives when DOCKER_HOST does not say: mounting it (or a folder holding it) into the
# runtime would hand the runtime root on this host.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


class ConfigError(Exception):
    """The agent's configuration is incomplete or invalid; names every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the deploy agent cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Mount:
    """One server-owned bind mount."""

    source: str
    target: str
    mode: Literal["rw", "ro"]

    def bind(self) -> str:
        return f"{self.source}:{self.target}:{self.mode}"


@dataclass(frozen=True)
class Environment:
    """What the server owns for one environment."""

    name: str
    container: str
    volumes: tuple[Mount, ...]


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


def load_config(environ: Mapping[str, str]) -> Config:
    """Build the Config from the environment, or raise ConfigError naming every missing or invalid variable."""
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
    protected = _protected_paths(state_dir, environ)
    environments = _environments(need("DEPLOY_AGENT_ENVIRONMENTS"), environ, problems, protected)
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
    auth = need("DEPLOY_AGENT_AUTH")
    token = team = aud = None
    deployers: dict[str, frozenset[str]] | None = None
    if auth == "token":
        token = need("DEPLOY_AGENT_TOKEN")
        if token and len(token) < MIN_TOKEN_LENGTH:
            problems.append(f"DEPLOY_AGENT_TOKEN is too short: use at least {MIN_TOKEN_LENGTH} random characters")
    elif auth == "cloudflare-access":
        team, aud = need("DEPLOY_AGENT_ACCESS_TEAM_DOMAIN"), need("DEPLOY_AGENT_ACCESS_AUD")
        if team and not _TEAM_DOMAIN.fullmatch(team):
            problems.append(
                f"DEPLOY_AGENT_ACCESS_TEAM_DOMAIN={team!r} must be a host name like acme.cloudflareaccess.com"
            )
        deployers = _deployers(environments, environ, problems)
        certs_url = environ.get("DEPLOY_AGENT_ACCESS_CERTS_URL", "")
        if certs_url and not _CERTS_URL.fullmatch(certs_url):
            problems.append(
                f"DEPLOY_AGENT_ACCESS_CERTS_URL={certs_url!r} must be an https:// URL (http:// only on 127.0.0.1)"
            )
    elif auth:
        problems.append(f"DEPLOY_AGENT_AUTH={auth!r} must be one of {', '.join(AUTH_MODES)}")
    username = environ.get("DEPLOY_AGENT_REGISTRY_USERNAME", "")
    password = environ.get("DEPLOY_AGENT_REGISTRY_PASSWORD", "")
    if bool(username) != bool(password):
        problems.append(
            "DEPLOY_AGENT_REGISTRY_USERNAME and DEPLOY_AGENT_REGISTRY_PASSWORD go together: set both or neither"
        )
    if problems:
        raise ConfigError(problems)
    return Config(
        bind=bind,
        state_dir=Path(state_dir),
        environments=environments,
        image_repository=repository,
        restart_policy=restart,
        runtime_logs=runtime_logs,
        auth=auth,  # type: ignore[arg-type]
        deployers=deployers,
        token=Secret(token) if token else None,
        access_team_domain=team,
        access_aud=aud,
        access_certs_url=environ.get("DEPLOY_AGENT_ACCESS_CERTS_URL")
        or (f"https://{team}/cdn-cgi/access/certs" if team else None),
        registry_username=username or None,
        registry_password=Secret(password) if password else None,
    )


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


def _protected_paths(state_dir: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Host paths no runtime volume may mount, by what they are: the Docker socket(s) and the state directory."""
    paths = {os.path.realpath(p): "the Docker socket" for p in DOCKER_SOCKETS}
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths[os.path.realpath(host.removeprefix("unix://"))] = "the Docker socket"
    if state_dir.startswith("/"):
        paths[os.path.realpath(state_dir)] = "the agent's state directory (DEPLOY_AGENT_STATE_DIR)"
    return paths


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
        volumes = _volumes(volumes_var, environ.get(volumes_var, "").strip(), problems, protected)
        served[name] = Environment(name=name, container=container, volumes=volumes)
    containers = [e.container for e in served.values() if e.container]
    if len(set(containers)) != len(containers):
        problems.append("each environment needs its own container name (DEPLOY_AGENT_CONTAINER_<ENV>)")
    return served


def _volumes(name: str, value: str, problems: list[str], protected: dict[str, str]) -> tuple[Mount, ...]:
    if not value:
        problems.append(f"{name} is not set (comma-separated HOST:CONTAINER[:ro|rw] mounts, or 'none')")
        return ()
    if value == "none":
        return ()
    mounts = []
    for item in value.split(","):
        parts = item.strip().split(":")
        mode = parts[2] if len(parts) == 3 else "rw"
        if len(parts) not in (2, 3) or not all(p.startswith("/") for p in parts[:2]) or mode not in ("rw", "ro"):
            problems.append(f"{name}: {item.strip()!r} is not an absolute HOST:CONTAINER[:ro|rw] mount")
            continue
        source = os.path.realpath(parts[0])
        clash = next((what for path, what in protected.items() if _overlaps(source, path)), None)
        if clash is not None:
            problems.append(f"{name}: {item.strip()!r} would mount {clash} into the runtime; mount another folder")
            continue
        mounts.append(Mount(source=parts[0], target=parts[1], mode=mode))  # type: ignore[arg-type]
    return tuple(mounts)


def _overlaps(source: str, protected: str) -> bool:
    """A mount of `source` reaches `protected`: it is that path, a folder holding it, or a path inside it."""
    holds = source == "/" or protected == source or protected.startswith(source + "/")
    return holds or source.startswith(protected + "/")
