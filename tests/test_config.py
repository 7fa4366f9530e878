"""The agent's configuration: environment only, all required, every problem named at once."""

from __future__ import annotations

import subprocess

import pytest

from agent.config import ConfigError, load_config
from conftest import Cli

GOOD = {
    "DEPLOY_AGENT_BIND": "127.0.0.1:8700",
    "DEPLOY_AGENT_STATE_DIR": "/var/lib/deploy-agent",
    "DEPLOY_AGENT_ENVIRONMENTS": "dev,prod",
    "DEPLOY_AGENT_IMAGE_REPOSITORY": "ghcr.io/acme/trader/runtime",
    "DEPLOY_AGENT_CONTAINER_DEV": "runtime-dev",
    "DEPLOY_AGENT_CONTAINER_PROD": "runtime-prod",
    "DEPLOY_AGENT_VOLUMES_DEV": "/srv/runtime/dev:/var/lib/runtime:rw",
    "DEPLOY_AGENT_VOLUMES_PROD": "none",
    "DEPLOY_AGENT_RESTART_POLICY": "unless-stopped",
    "DEPLOY_AGENT_AUTH": "token",
    "DEPLOY_AGENT_TOKEN": "t" * 40,
}


def test_a_good_configuration() -> None:
    config = load_config(GOOD)
    assert config.environments["dev"].container == "runtime-dev"
    assert [m.bind() for m in config.environments["dev"].volumes] == ["/srv/runtime/dev:/var/lib/runtime:rw"]
    assert config.environments["prod"].volumes == ()
    assert str(config.token) == "****"


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


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"DEPLOY_AGENT_AUTH": "token"})
    message = str(raised.value)
    for name in ("BIND", "STATE_DIR", "ENVIRONMENTS", "IMAGE_REPOSITORY", "RESTART_POLICY", "TOKEN"):
        assert f"DEPLOY_AGENT_{name} is not set" in message


def test_deploy_agent_refuses_to_start_naming_every_problem(cli: Cli) -> None:
    env = {"PATH": "/usr/bin:/bin", "DEPLOY_AGENT_AUTH": "token", "DEPLOY_AGENT_TOKEN": "secret-token-value"}
    result = subprocess.run([str(cli.bin_dir / "deploy-agent")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "DEPLOY_AGENT_BIND is not set" in result.stderr
    assert "DEPLOY_AGENT_STATE_DIR is not set" in result.stderr
    assert "secret-token-value" not in result.stderr + result.stdout
