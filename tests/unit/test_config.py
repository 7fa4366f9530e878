"""The agent's configuration: environment only, all required, every problem named at once."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, load_config
from conftest import AGENT_ENV

GOOD = {
    **AGENT_ENV,
    "DEPLOY_AGENT_STATE_DIR": "/var/lib/deploy-agent",
    "DEPLOY_AGENT_IMAGE_REPOSITORY": "ghcr.io/acme/trader/runtime",
    "DEPLOY_AGENT_TOKEN": "t" * 40,
}
ACCESS = {
    **{k: v for k, v in GOOD.items() if k != "DEPLOY_AGENT_TOKEN"},
    "DEPLOY_AGENT_AUTH": "cloudflare-access",
    "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": "acme.cloudflareaccess.com",
    "DEPLOY_AGENT_ACCESS_AUD": "a" * 64,
    "DEPLOY_AGENT_DEPLOYERS_DEV": "ci-dev.token, Alice@Example.com",
    "DEPLOY_AGENT_DEPLOYERS_PROD": "ci-prod.token",
}


def test_a_good_configuration() -> None:
    config = load_config(GOOD)
    assert config.environments["dev"].container == "runtime-dev"
    assert [m.bind() for m in config.environments["dev"].volumes] == ["/srv/runtime/dev:/var/lib/runtime:rw"]
    assert config.environments["prod"].volumes == ()
    assert str(config.token) == "****"
    assert config.runtime_logs == {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}}
    assert config.deployers is None  # the one token holds every right


def test_access_names_who_may_deploy_to_each_environment() -> None:
    config = load_config(ACCESS)
    assert config.deployers == {"dev": {"ci-dev.token", "alice@example.com"}, "prod": {"ci-prod.token"}}


def test_daemon_logs_leave_the_log_driver_to_docker() -> None:
    assert load_config({**GOOD, "DEPLOY_AGENT_RUNTIME_LOGS": "daemon"}).runtime_logs is None


def test_the_target_is_everything_the_server_owns() -> None:
    target = load_config(GOOD).target("dev")
    assert (target.container, target.binds, target.restart_policy) == (
        "runtime-dev",
        ("/srv/runtime/dev:/var/lib/runtime:rw",),
        "unless-stopped",
    )
    assert target.describe_logs() == "json-file logs (max-size=50m, max-file=5)"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"DEPLOY_AGENT_BIND": ""}, "DEPLOY_AGENT_BIND is not set"),
        ({"DEPLOY_AGENT_BIND": "8700"}, "is not HOST:PORT"),
        ({"DEPLOY_AGENT_STATE_DIR": "state"}, "must be an absolute path"),
        ({"DEPLOY_AGENT_ENVIRONMENTS": "dev,staging"}, "'staging' is not an environment"),
        ({"DEPLOY_AGENT_ENVIRONMENTS": "dev,dev"}, "lists 'dev' twice"),
        ({"DEPLOY_AGENT_IMAGE_REPOSITORY": "ghcr.io/acme/trader/runtime:1.0.0"}, "without tag"),
        ({"DEPLOY_AGENT_IMAGE_REPOSITORY": "GHCR.io/acme/runtime"}, "must be a lowercase"),
        ({"DEPLOY_AGENT_CONTAINER_PROD": ""}, "DEPLOY_AGENT_CONTAINER_PROD is not set"),
        ({"DEPLOY_AGENT_CONTAINER_PROD": "runtime-dev"}, "its own container name"),
        ({"DEPLOY_AGENT_CONTAINER_DEV": "bad name"}, "not a valid container name"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": ""}, "DEPLOY_AGENT_VOLUMES_DEV is not set"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "data:/data"}, "not an absolute HOST:CONTAINER"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/a:/b:z"}, "not an absolute HOST:CONTAINER"),
        ({"DEPLOY_AGENT_RESTART_POLICY": "sometimes"}, "must be one of no, on-failure"),
        ({"DEPLOY_AGENT_AUTH": "basic"}, "must be one of cloudflare-access, token"),
        ({"DEPLOY_AGENT_TOKEN": "short"}, "too short"),
        ({"DEPLOY_AGENT_TOKEN": ""}, "DEPLOY_AGENT_TOKEN is not set"),
        ({"DEPLOY_AGENT_AUTH": "cloudflare-access"}, "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN is not set"),
        ({"DEPLOY_AGENT_REGISTRY_USERNAME": "bot"}, "go together"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": ""}, "DEPLOY_AGENT_RUNTIME_LOGS is not set"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "max-size=50m"}, "both required"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "max-file=5"}, "both required"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "max-size=50x,max-file=5"}, "SIZE like 50m"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "max-size=50m,max-file=0"}, "N from 1 to 100"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "max-size=50m,max-file=5,compress=true"}, "must be 'max-size=SIZE"),
        ({"DEPLOY_AGENT_RUNTIME_LOGS": "json-file"}, "or 'daemon'"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/var/run/docker.sock:/var/run/docker.sock"}, "would mount the Docker socket"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/run/docker.sock:/d.sock:ro"}, "would mount the Docker socket"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/var/run:/host-run:ro"}, "would mount the Docker socket"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/:/host:ro"}, "would mount the Docker socket"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/var/lib/deploy-agent:/x"}, "would mount the agent's state directory"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/var/lib/deploy-agent/sub:/x"}, "would mount the agent's state directory"),
        ({"DEPLOY_AGENT_VOLUMES_DEV": "/var/lib:/x:ro"}, "would mount the agent's state directory"),
        (
            {"DEPLOY_AGENT_VOLUMES_DEV": "/srv/sock:/s", "DOCKER_HOST": "unix:///srv/sock/docker.sock"},
            "would mount the Docker socket",
        ),
        (
            {
                "DEPLOY_AGENT_AUTH": "cloudflare-access",
                "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": "acme.cloudflareaccess.com",
                "DEPLOY_AGENT_ACCESS_AUD": "aud",
                "DEPLOY_AGENT_ACCESS_CERTS_URL": "http://example.com/certs",
            },
            "must be an https:// URL",
        ),
    ],
)
def test_bad_configurations_name_the_variable(change: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**GOOD, **change})
    assert fragment in str(raised.value)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_access_without_deployers_for_an_environment_is_refused(env: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({k: v for k, v in ACCESS.items() if k != f"DEPLOY_AGENT_DEPLOYERS_{env.upper()}"})
    assert f"DEPLOY_AGENT_DEPLOYERS_{env.upper()} is not set: with cloudflare-access, list who may deploy" in str(
        raised.value
    )


def test_a_volume_beside_the_protected_paths_is_fine() -> None:
    config = load_config({**GOOD, "DEPLOY_AGENT_VOLUMES_DEV": "/var/lib/deploy-agent-data:/data,/srv/run:/run:ro"})
    assert [m.source for m in config.environments["dev"].volumes] == ["/var/lib/deploy-agent-data", "/srv/run"]


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"DEPLOY_AGENT_AUTH": "token"})
    message = str(raised.value)
    for name in ("BIND", "STATE_DIR", "ENVIRONMENTS", "IMAGE_REPOSITORY", "RESTART_POLICY", "RUNTIME_LOGS", "TOKEN"):
        assert f"DEPLOY_AGENT_{name} is not set" in message


# -- DEPLOY_AGENT_GITHUB_OIDC: `required` or `off`, written out; `required` needs what the token must say

GITHUB = {
    **GOOD,
    "DEPLOY_AGENT_GITHUB_OIDC": "required",
    "DEPLOY_AGENT_GITHUB_ISSUER": "https://token.actions.githubusercontent.com",
    "DEPLOY_AGENT_GITHUB_AUDIENCE": "https://deploy.example.com",
    "DEPLOY_AGENT_GITHUB_REPOSITORY": "acme/trader",
    "DEPLOY_AGENT_GITHUB_REPOSITORY_ID": "123456789",
    "DEPLOY_AGENT_GITHUB_WORKFLOW": ".github/workflows/deploy.yml",
    "DEPLOY_AGENT_GITHUB_REFS": "refs/heads/main, refs/tags/v1.0.0",
}


def test_github_oidc_required_names_what_the_token_must_say() -> None:
    config = load_config(GITHUB)
    assert config.github_oidc == "required" and config.github is not None
    assert config.github.refs == ("refs/heads/main", "refs/tags/v1.0.0")
    assert (config.github.repository, config.github.repository_id) == ("acme/trader", "123456789")
    assert load_config({**GITHUB, "DEPLOY_AGENT_GITHUB_ISSUER": "http://127.0.0.1:8123"}).github is not None


def test_github_oidc_off_reads_nothing_more() -> None:
    config = load_config({**GOOD, "DEPLOY_AGENT_GITHUB_ISSUER": "not looked at"})
    assert (config.github_oidc, config.github) == ("off", None)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"DEPLOY_AGENT_GITHUB_OIDC": ""}, "DEPLOY_AGENT_GITHUB_OIDC is not set"),
        ({"DEPLOY_AGENT_GITHUB_OIDC": "on"}, "DEPLOY_AGENT_GITHUB_OIDC='on' must be 'required'"),
        ({"DEPLOY_AGENT_GITHUB_ISSUER": ""}, "DEPLOY_AGENT_GITHUB_ISSUER is not set"),
        ({"DEPLOY_AGENT_GITHUB_ISSUER": "http://token.example.com"}, "http:// only on 127.0.0.1"),
        ({"DEPLOY_AGENT_GITHUB_AUDIENCE": ""}, "DEPLOY_AGENT_GITHUB_AUDIENCE is not set"),
        ({"DEPLOY_AGENT_GITHUB_REPOSITORY": "trader"}, "must be OWNER/REPO"),
        ({"DEPLOY_AGENT_GITHUB_REPOSITORY_ID": "acme/trader"}, "gh api repos/OWNER/REPO --jq .id"),
        ({"DEPLOY_AGENT_GITHUB_REPOSITORY_ID": ""}, "DEPLOY_AGENT_GITHUB_REPOSITORY_ID is not set"),
        ({"DEPLOY_AGENT_GITHUB_WORKFLOW": "deploy.yml"}, "e.g. .github/workflows/deploy.yml"),
        ({"DEPLOY_AGENT_GITHUB_REFS": "main"}, "'main' is not a full ref"),
        ({"DEPLOY_AGENT_GITHUB_REFS": " , "}, "names no ref"),
        ({"DEPLOY_AGENT_GITHUB_REFS": ""}, "DEPLOY_AGENT_GITHUB_REFS is not set"),
    ],
)
def test_bad_github_oidc_settings_name_the_variable(change: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**GITHUB, **change})
    assert fragment in str(raised.value)
