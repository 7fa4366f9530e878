"""The agent's configuration: environment variables only, all required, no defaults; the one place that reads them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runner.render import ENVIRONMENTS
from runner.secrets import Secret

RESTART_POLICIES = ("no", "on-failure", "unless-stopped", "always")
AUTH_MODES = ("cloudflare-access", "token")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_IMAGE_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+/runtime"
)
_TEAM_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_CERTS_URL = re.compile(r"https://[^\s/]+/\S*|http://127\.0\.0\.1(?::[0-9]{1,5})?/\S*")
MIN_TOKEN_LENGTH = 32


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
    auth: Literal["cloudflare-access", "token"]
    token: Secret | None
    access_team_domain: str | None
    access_aud: str | None
    access_certs_url: str | None
    registry_username: str | None
    registry_password: Secret | None


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
    environments = _environments(need("DEPLOY_AGENT_ENVIRONMENTS"), environ, problems)
    repository = need("DEPLOY_AGENT_IMAGE_REPOSITORY")
    if repository and not _IMAGE_REPOSITORY.fullmatch(repository):
        problems.append(
            f"DEPLOY_AGENT_IMAGE_REPOSITORY={repository!r} must be a lowercase <registry>/<path>/runtime "
            "repository without tag, e.g. ghcr.io/acme/trader/runtime"
        )
    restart = need("DEPLOY_AGENT_RESTART_POLICY")
    if restart and restart not in RESTART_POLICIES:
        problems.append(f"DEPLOY_AGENT_RESTART_POLICY={restart!r} must be one of {', '.join(RESTART_POLICIES)}")
    auth = need("DEPLOY_AGENT_AUTH")
    token = team = aud = None
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
        auth=auth,  # type: ignore[arg-type]
        token=Secret(token) if token else None,
        access_team_domain=team,
        access_aud=aud,
        access_certs_url=environ.get("DEPLOY_AGENT_ACCESS_CERTS_URL")
        or (f"https://{team}/cdn-cgi/access/certs" if team else None),
        registry_username=username or None,
        registry_password=Secret(password) if password else None,
    )


def _environments(value: str, environ: Mapping[str, str], problems: list[str]) -> dict[str, Environment]:
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
        volumes = _volumes(volumes_var, environ.get(volumes_var, "").strip(), problems)
        served[name] = Environment(name=name, container=container, volumes=volumes)
    containers = [e.container for e in served.values() if e.container]
    if len(set(containers)) != len(containers):
        problems.append("each environment needs its own container name (DEPLOY_AGENT_CONTAINER_<ENV>)")
    return served


def _volumes(name: str, value: str, problems: list[str]) -> tuple[Mount, ...]:
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
        mounts.append(Mount(source=parts[0], target=parts[1], mode=mode))  # type: ignore[arg-type]
    return tuple(mounts)
