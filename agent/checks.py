"""`deploy-agent check`: the agent's configuration and the server around it, proved before the service starts.

Reads the same variables as the agent, changes nothing, starts nothing. One line per check, `ok`, `warn` or
`FAIL` with the reason; a check that cannot be sure says `warn`, never `ok`. Each check is a function of the
Context that yields its lines; CHECKS lists them in order, so a new check is one function and one row.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker.auth
import docker.errors

from agent.config import ConfigError, load_config
from agent.dockerio import DOCKER_ERRORS
from agent.jwks import JwksCache
from agent.preflight import NETWORK_TIMEOUT, NOT_CHECKED, Check, Context, Line, existing_ancestor, free_space
from agent.volumes import source_state
from runner.core.secrets import Masker, reveal


def variables(ctx: Context) -> Iterator[Line]:
    if ctx.problems:
        for problem in ctx.problems:
            name = problem.split(" ", 1)[0].split("=", 1)[0].rstrip(":")
            yield Line("FAIL", name if name.startswith("DEPLOY_AGENT_") else "variables", problem)
        return
    config = ctx.config
    assert config is not None
    yield Line("ok", "variables", f"every variable is set and valid; serves {', '.join(config.environments)}")
    if config.auth == "token":
        leftovers = sorted(n for n in ctx.environ if n.startswith(("DEPLOY_AGENT_ACCESS_", "DEPLOY_AGENT_DEPLOYERS_")))
        if leftovers:
            yield Line(
                "warn",
                "variables",
                f"{', '.join(leftovers)} set, but DEPLOY_AGENT_AUTH=token: they are not read, and the one token "
                "holds every right",
            )


def state_directory(ctx: Context) -> Iterator[Line]:
    if ctx.config is None:
        yield Line("warn", "state directory", NOT_CHECKED)
        return
    path = ctx.config.state_dir
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        parent = existing_ancestor(path)
        if os.access(parent, os.W_OK | os.X_OK):
            yield Line("ok", f"state directory {path}", "does not exist yet; the agent creates it (mode 0700)")
        else:
            yield Line(
                "warn",
                f"state directory {path}",
                f"does not exist, and this user cannot create it in {parent}: the unit's StateDirectory= creates "
                "it when the service starts; else the agent answers reads and refuses deploys until it exists",
            )
        return
    except OSError as e:
        yield Line("FAIL", f"state directory {path}", f"cannot be read ({e.strerror})")
        return
    if not path.is_dir():
        yield Line("FAIL", f"state directory {path}", "is not a directory")
    elif mode & 0o022:
        yield Line(
            "FAIL",
            f"state directory {path}",
            f"writable by its group or by everyone (mode {mode:04o}): the agent refuses to start; chmod 700 {path}",
        )
    elif not os.access(path, os.W_OK | os.X_OK):
        yield Line(
            "FAIL",
            f"state directory {path}",
            f"not writable by this user (uid {os.getuid()}): deploys would be refused with 503; run the check as "
            "the agent's user, or give it the directory",
        )
    else:
        yield Line("ok", f"state directory {path}", f"mode {mode:04o}, writable by this user (uid {os.getuid()})")


def mount_sources(ctx: Context) -> Iterator[Line]:
    if ctx.config is None:
        yield Line("warn", "mount sources", NOT_CHECKED)
        return
    for env in ctx.config.environments.values():
        variable = env.volumes_variable
        if not env.volumes:
            yield Line("ok", variable, "no bind mounts")
        for mount in env.volumes:
            found = source_state(mount)
            if isinstance(found, str):
                yield Line("FAIL", variable, found)
            else:
                yield Line(
                    "ok",
                    variable,
                    f"{mount.source} exists (owner uid {found.st_uid}, mode {stat.S_IMODE(found.st_mode):04o})",
                )


def docker_engine(ctx: Context) -> Iterator[Line]:
    client = ctx.docker()
    where = ctx.environ.get("DOCKER_HOST") or "the local socket"
    if client is None:
        yield Line("FAIL", "Docker Engine", f"not reachable at {where}: {ctx.docker_error}")
        return
    try:
        version = client.version(api_version=False)
    except DOCKER_ERRORS as e:
        yield Line("warn", "Docker Engine", f"answers at {where}, but not its version: {e}")
        return
    yield Line("ok", "Docker Engine", f"reachable at {where}: Docker {version.get('Version')}")


def registry_login(ctx: Context) -> Iterator[Line]:
    config = ctx.config
    if config is None:
        yield Line("warn", "registry login", NOT_CHECKED)
        return
    registry = docker.auth.resolve_repository_name(config.image_repository)[0]
    if config.registry_username is None or config.registry_password is None:
        yield Line("ok", f"registry {registry}", "no credentials set: the engine pulls anonymously")
        return
    client = ctx.docker()
    if client is None:
        yield Line("FAIL", f"registry {registry}", "not checked: Docker is not reachable")
        return
    masker = Masker([config.registry_password])  # the engine's words never show the password, in any form
    try:
        client.login(config.registry_username, reveal(config.registry_password), registry=registry, reauth=True)
    except docker.errors.APIError as e:
        said = masker.mask(str(e.explanation or e))
        if e.status_code in (401, 403) or "unauthorized" in said.lower() or "denied" in said.lower():
            yield Line(
                "FAIL",
                f"registry {registry}",
                f"the registry refused {config.registry_username}: {said}; renew DEPLOY_AGENT_REGISTRY_PASSWORD "
                "(and check DEPLOY_AGENT_REGISTRY_USERNAME)",
            )
        else:  # the registry was not reached: the credentials are neither proved nor disproved
            yield Line("warn", f"registry {registry}", f"the engine could not try the login: {said}")
        return
    except DOCKER_ERRORS as e:
        yield Line("warn", f"registry {registry}", f"the login could not be tried: {masker.mask(str(e))}")
        return
    yield Line("ok", f"registry {registry}", f"the engine logs in as {config.registry_username}")


def access_keys(ctx: Context) -> Iterator[Line]:
    config = ctx.config
    if config is None or config.auth != "cloudflare-access" or config.access_certs_url is None:
        return
    try:
        kids = JwksCache(config.access_certs_url, timeout=NETWORK_TIMEOUT).key_ids()
    except (OSError, ValueError) as e:
        yield Line(
            "FAIL",
            "Access signing keys",
            f"{e}: every authenticated request would answer 503 auth_unavailable (DEPLOY_AGENT_ACCESS_TEAM_DOMAIN)",
        )
        return
    yield Line("ok", "Access signing keys", f"{len(kids)} RS256 key(s) at {config.access_certs_url}")


def github_oidc_keys(ctx: Context) -> Iterator[Line]:
    config = ctx.config
    if config is None or config.github is None:
        return
    issuer = config.github.issuer
    try:
        kids = JwksCache.discovered(issuer, name="GitHub OIDC keys", timeout=NETWORK_TIMEOUT).key_ids()
    except (OSError, ValueError) as e:
        yield Line(
            "FAIL",
            "GitHub OIDC keys",
            f"{e}: every real deploy would answer 503 auth_unavailable (DEPLOY_AGENT_GITHUB_ISSUER; GitHub's is "
            "https://token.actions.githubusercontent.com)",
        )
        return
    yield Line("ok", "GitHub OIDC keys", f"{len(kids)} RS256 key(s) named by {issuer}'s discovery document")


def disk_space(ctx: Context) -> Iterator[Line]:
    if ctx.config is not None:
        yield free_space("state directory's filesystem", existing_ancestor(ctx.config.state_dir))
    client = ctx.docker()
    host = ctx.environ.get("DOCKER_HOST", "")
    if client is None:
        yield Line("warn", "Docker's filesystem", "not checked: Docker is not reachable")
    elif host and not host.startswith("unix://"):
        yield Line("warn", "Docker's filesystem", f"Docker runs elsewhere ({host}): its free space cannot be read here")
    else:
        try:
            root = str(client.info().get("DockerRootDir") or "")
        except DOCKER_ERRORS as e:
            yield Line("warn", "Docker's filesystem", f"docker info did not answer: {e}")
            return
        yield (
            free_space(f"Docker's filesystem ({root})", Path(root))
            if root
            else Line("warn", "Docker's filesystem", "docker info names no DockerRootDir")
        )


def bind_address(ctx: Context) -> Iterator[Line]:
    if ctx.config is None:
        return
    host = ctx.config.bind.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        yield Line(
            "ok", "DEPLOY_AGENT_BIND", f"{ctx.config.bind} is loopback: only cloudflared on this host reaches it"
        )
    else:
        yield Line(
            "warn",
            "DEPLOY_AGENT_BIND",
            f"{ctx.config.bind} is not a loopback address: anything on that network reaches the agent directly, "
            "past Access and cloudflared; use 127.0.0.1:8700",
        )


CHECKS: tuple[Check, ...] = (
    variables,
    state_directory,
    mount_sources,
    docker_engine,
    registry_login,
    access_keys,
    github_oidc_keys,
    disk_space,
    bind_address,
)


def run_checks(environ: Mapping[str, str], *, checks: tuple[Check, ...] = CHECKS, **context: Any) -> list[Line]:
    """Every check's lines, in order; nothing is changed or started."""
    ctx = Context(environ=environ, **context)
    try:
        ctx.config = load_config(environ, check_sources=False)
    except ConfigError as e:
        ctx.problems = e.problems
    try:
        return [line for check in checks for line in check(ctx)]
    finally:
        ctx.close()
