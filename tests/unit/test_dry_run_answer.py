"""The dry run's `registry` and `may_deploy`: the registry is asked through the engine's distribution endpoint
(nothing pulled) and the rights are the deploy's own; `dry-run --agent` exits 3 when either says no."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker.errors
import pytest

from accesskeys import TEAM, Issuer, Jwks, Key
from agent.registry import ask_registry
from conftest import RUNTIME_ENV, Api, InProcessCli, plan
from fakedocker import FakeContainer, FakeDocker

REPO = Path(__file__).resolve().parents[2]
GHCR = "ghcr.io/acme/trader/runtime"
DIGEST = "sha256:" + "e" * 64
DEV_TOKEN = "ci-dev.access"


def body(tag: str = "1.0.3", env: str = "dev") -> dict[str, Any]:
    sent = {"plan": plan(tag, env), "env": RUNTIME_ENV, "dry_run": True}
    return {**sent, "confirm": f"prod:{tag}"} if env == "prod" else sent


def test_a_tag_the_registry_has_is_found_with_its_digest(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    docker.registry[plan()["image"]] = DIGEST
    api = make_api(docker=docker)

    answer = api.deploy(body()).get_json()

    assert (answer["registry"], answer["may_deploy"]) == ({"found": True, "digest": DIGEST}, True)
    assert ("inspect_distribution", (plan()["image"],), {"auth_config": None}) in docker.calls
    assert docker.touched() == []


def test_a_missing_tag_is_not_found_with_the_registrys_reason(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    api = make_api(docker=docker)

    answer = api.deploy(body("9.9.9")).get_json()

    assert answer["registry"]["found"] is False
    assert (
        answer["registry"]["reason"]
        == f"the registry does not give {plan('9.9.9')['image']}: {plan('9.9.9')['image']}: manifest unknown"
    )
    assert docker.touched() == []


def test_the_servers_registry_credentials_are_used_and_never_shown(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    password = "registry-password-canary-1234"
    api = make_api(docker=docker, DEPLOY_AGENT_REGISTRY_USERNAME="bot", DEPLOY_AGENT_REGISTRY_PASSWORD=password)

    response = api.deploy(body())

    [asked] = [kwargs for name, _, kwargs in docker.calls if name == "inspect_distribution"]
    assert asked == {"auth_config": {"username": "bot", "password": password}}
    assert password not in response.get_data(as_text=True)


def test_docker_gone_while_asking_is_not_found_saying_so() -> None:
    answer = ask_registry(FakeDocker(reachable=False).connect, f"{GHCR}:1.0.3", auth=None)
    assert answer["found"] is False
    assert answer["reason"].startswith(f"Docker is unreachable, so the registry could not be asked about {GHCR}:1.0.3")


# -- may_deploy with Cloudflare Access, and the CLI behind a stand-in for Access's edge


@dataclasses.dataclass
class Access:
    api: Api
    issuer: Issuer
    key: Key

    def edge(self) -> Api:
        """The app behind what Access's edge does: it turns the service token's headers into its signed JWT, the
        Client ID as the `common_name` (the edge itself cannot run here)."""
        app = self.api.app

        def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            client_id = environ.get("HTTP_CF_ACCESS_CLIENT_ID")
            if client_id:
                claims = self.issuer.claims(common_name=client_id)
                environ["HTTP_CF_ACCESS_JWT_ASSERTION"] = self.issuer.sign(self.key, claims)
            return app(environ, start_response)

        return dataclasses.replace(self.api, app=wsgi)  # type: ignore[arg-type]


@pytest.fixture
def access(make_api: Callable[..., Api], jwks: tuple[Jwks, Key]) -> Access:
    served, key = jwks
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-prod", f"{GHCR}:1.0.2"))
    for env_tag in ("1.0.3",):
        docker.registry[f"{GHCR}:{env_tag}"] = DIGEST
    api = make_api(
        docker=docker,
        headers={},
        DEPLOY_AGENT_IMAGE_REPOSITORY=GHCR,
        DEPLOY_AGENT_AUTH="cloudflare-access",
        DEPLOY_AGENT_TOKEN=None,
        DEPLOY_AGENT_ACCESS_TEAM_DOMAIN=TEAM,
        DEPLOY_AGENT_ACCESS_AUD="a" * 64,
        DEPLOY_AGENT_ACCESS_CERTS_URL=served.url,
        DEPLOY_AGENT_DEPLOYERS_DEV=DEV_TOKEN,
        DEPLOY_AGENT_DEPLOYERS_PROD="ci-prod.access",
    )
    return Access(api=api, issuer=Issuer(aud="a" * 64), key=key)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "plans", tmp_path / "plans")
    (tmp_path / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", tmp_path / "infra" / "ENV_SCHEMA.md")
    return tmp_path


def dry_run(cli: InProcessCli, ws: Path, url: str, env: str, client_id: str) -> Any:
    runtime = {**RUNTIME_ENV, "RUNTIME_ENV": env}
    args = ("plans/runtime.yaml", "--env", env, "--tag", "1.0.3", "--repository", "acme/trader", "--agent", url)
    secrets = {"CF_ACCESS_CLIENT_ID": client_id, "CF_ACCESS_CLIENT_SECRET": "s" * 40}
    return cli.run("dry-run", *args, cwd=ws, env={**runtime, **secrets})


def test_a_caller_not_listed_may_not_deploy_and_dry_run_exits_3(
    access: Access, cli: InProcessCli, ws: Path, serve: Callable[[Api], str]
) -> None:
    """The dev workflow's token asking about prod: the dry run says so before anyone approves a prod run."""
    url = serve(access.edge())

    result = dry_run(cli, ws, url, "prod", DEV_TOKEN)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "may deploy      NO (this caller, to prod)" in result.stdout
    assert f"registry        has {GHCR}:1.0.3 ({DIGEST})" in result.stdout
    assert result.stderr == (
        f"error: a deploy of {GHCR}:1.0.3 would not go through: this caller may not deploy to prod "
        "(DEPLOY_AGENT_DEPLOYERS_<ENV>); nothing was touched\n"
    )
    assert access.api.docker.touched() == []
    assert access.api.audit() == []

    allowed = dry_run(cli, ws, url, "dev", DEV_TOKEN)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "may deploy      yes (this caller, to dev)" in allowed.stdout


@pytest.mark.parametrize("echo", [lambda p: p, quote, lambda p: json.dumps(p)[1:-1]], ids=["as-is", "url", "json"])
def test_a_registry_that_echoes_the_password_in_any_form_shows_none_of_it(echo: Callable[[str], str]) -> None:
    password = 'p@ss "word" 1234'

    class Echoing(FakeDocker):
        def inspect_distribution(self, image: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
            raise docker.errors.APIError(f"unauthorized: login {echo(password)} refused")

    answer = ask_registry(Echoing().connect, f"{GHCR}:1.0.3", auth={"username": "bot", "password": password})
    assert answer["found"] is False and answer["reason"].endswith("unauthorized: login **** refused")
