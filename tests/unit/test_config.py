"""The agent's configuration: environment only, all required, every problem named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from conftest import AGENT_ENV, DEV_VOLUME

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
    assert [m.bind() for m in config.environments["dev"].volumes] == [DEV_VOLUME]
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
        (DEV_VOLUME,),
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


def test_a_volume_beside_the_protected_paths_is_fine(tmp_path: Path) -> None:
    beside, other = tmp_path / "deploy-agent-data", tmp_path / "run"
    beside.mkdir(), other.mkdir()
    config = load_config(
        {
            **GOOD,
            "DEPLOY_AGENT_STATE_DIR": str(tmp_path / "deploy-agent"),
            "DEPLOY_AGENT_VOLUMES_DEV": f"{beside}:/data,{other}:/run:ro",
        }
    )
    assert [m.source for m in config.environments["dev"].volumes] == [str(beside), str(other)]


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


# -- strict configuration: unknown names, placeholders, mount sources


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # Found in issue 18: the missing S was accepted silently and the real list stayed unset.
        ({"DEPLOY_AGENT_DEPLOYER_PROD": "ci-prod.token"}, "did you mean DEPLOY_AGENT_DEPLOYERS_PROD?"),
        ({"DEPLOY_AGENT_RESTART": "always"}, "did you mean DEPLOY_AGENT_RESTART_POLICY?"),
        ({"DEPLOY_AGENT_VOLUME_DEV": "none"}, "did you mean DEPLOY_AGENT_VOLUMES_DEV?"),
        ({"DEPLOY_AGENT_REGISTRY_PASS": "x"}, "did you mean DEPLOY_AGENT_REGISTRY_PASSWORD?"),
        ({"DEPLOY_AGENT_CONTAINER_STAGING": "x"}, "DEPLOY_AGENT_CONTAINER_STAGING is not a variable of the deploy"),
        ({"DEPLOY_AGENT_FROBNICATE": "1"}, "the agent's variables are listed in docs/agent.md"),
        # Found in issue 18: the example's placeholder was accepted as the AUD tag.
        (
            {"DEPLOY_AGENT_ACCESS_AUD": "replace-with-the-64-hex-aud-tag-of-the-access-application"},
            "DEPLOY_AGENT_ACCESS_AUD='replace-with-the-64-hex-aud-tag-of-the-access-application' still holds a "
            "placeholder",
        ),
        ({"DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": "<team>.cloudflareaccess.com"}, "TEAM_DOMAIN='<team>.cloudflare"),
        ({"DEPLOY_AGENT_DEPLOYERS_DEV": "<Client ID of github-deploy-dev>"}, "DEPLOY_AGENT_DEPLOYERS_DEV='<Client"),
        ({"DEPLOY_AGENT_DEPLOYERS_PROD": "REPLACE-WITH-the-client-id"}, "still holds a placeholder"),
    ],
)
def test_strict_names_and_placeholders_stop_startup(change: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**ACCESS, **change})
    assert fragment in str(raised.value)


def test_a_per_environment_variable_of_an_environment_not_served_stops_startup() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**GOOD, "DEPLOY_AGENT_ENVIRONMENTS": "dev"})
    message = str(raised.value)
    assert "DEPLOY_AGENT_CONTAINER_PROD is set, but prod is not served (DEPLOY_AGENT_ENVIRONMENTS)" in message
    assert "DEPLOY_AGENT_VOLUMES_PROD is set, but prod is not served" in message
    served = {k: v for k, v in GOOD.items() if not k.endswith("_PROD")}
    assert list(load_config({**served, "DEPLOY_AGENT_ENVIRONMENTS": "dev"}).environments) == ["dev"]


def test_the_cli_variable_and_other_prefixes_are_not_the_agents() -> None:
    config = load_config({**GOOD, "DEPLOY_AGENT_URL": "https://deploy.example.com", "DEPLOY_ENVIRONMENT": "dev"})
    assert config.bind == GOOD["DEPLOY_AGENT_BIND"]


@pytest.mark.parametrize("name", ["DEPLOY_AGENT_TOKEN", "DEPLOY_AGENT_REGISTRY_PASSWORD"])
def test_a_placeholder_in_a_secret_is_named_without_its_value(name: str) -> None:
    value = "replace-with-a-read-packages-token-" + "s" * 20
    with pytest.raises(ConfigError) as raised:
        load_config(
            {**GOOD, "DEPLOY_AGENT_REGISTRY_USERNAME": "bot", "DEPLOY_AGENT_REGISTRY_PASSWORD": "p", name: value}
        )
    assert f"{name} still holds a placeholder" in str(raised.value)
    assert value not in str(raised.value)


def test_every_problem_of_a_strict_configuration_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**ACCESS, "DEPLOY_AGENT_ACCESS_AUD": "replace-with-aud", "DEPLOY_AGENT_DEPLOYER_PROD": "x"})
    assert len(raised.value.problems) == 2


def test_a_missing_mount_source_stops_startup_naming_variable_and_path(tmp_path: Path) -> None:
    """Found in issue 18: Docker created the missing prod directory root:root 0755, unwritable for the runtime."""
    missing = tmp_path / "prod-data"
    with pytest.raises(ConfigError) as raised:
        load_config({**GOOD, "DEPLOY_AGENT_VOLUMES_PROD": f"{missing}:/var/lib/runtime:rw"})
    assert f"DEPLOY_AGENT_VOLUMES_PROD: the mount source {missing} does not exist" in str(raised.value)
    assert not missing.exists()
    missing.mkdir()
    assert load_config({**GOOD, "DEPLOY_AGENT_VOLUMES_PROD": f"{missing}:/var/lib/runtime:rw"}).environments["prod"]


def test_every_variable_read_is_in_the_one_table() -> None:
    """A name the loader reads but the table lacks would stop every agent that sets it: the two agree."""
    import re

    from agent import config, variables, volumes

    source = "".join(Path(m.__file__ or "").read_text() for m in (config, volumes))
    read = set(re.findall(r'"(DEPLOY_AGENT_[A-Z_]+)"', source)) | {
        n + "<ENV>" for n in re.findall(r'f"(DEPLOY_AGENT_[A-Z_]+_)\{name\.upper\(\)\}"', source)
    }
    assert read <= {v.name for v in variables.VARIABLES}


def _example() -> dict[str, str]:
    """infra/agent.env.example as systemd's EnvironmentFile= reads it: NAME=value lines, comments skipped."""
    text = (Path(__file__).resolve().parents[2] / "infra" / "agent.env.example").read_text("utf-8")
    pairs = (line.partition("=") for line in text.splitlines() if line and not line.startswith("#"))
    return {name: value for name, _, value in pairs}


def test_the_shipped_example_names_only_its_placeholders_and_volumes(tmp_path: Path) -> None:
    """The example is meant to be filled in: as shipped, it stops the agent on exactly what is still to do."""
    example = _example()
    with pytest.raises(ConfigError) as raised:
        load_config(example)
    problems = raised.value.problems
    assert [p.split("=")[0].split(" ")[0] for p in problems if "placeholder" in p] == [
        "DEPLOY_AGENT_ACCESS_AUD",
        "DEPLOY_AGENT_DEPLOYERS_DEV",
        "DEPLOY_AGENT_DEPLOYERS_PROD",
    ]
    assert all("placeholder" in p or "mount source /srv/runtime/" in p for p in problems), problems

    dev, prod = tmp_path / "dev", tmp_path / "prod"
    dev.mkdir(), prod.mkdir()
    filled = {
        **example,
        "DEPLOY_AGENT_ACCESS_AUD": "a" * 64,
        "DEPLOY_AGENT_DEPLOYERS_DEV": "1b2c.access",
        "DEPLOY_AGENT_DEPLOYERS_PROD": "3d4e.access",
        "DEPLOY_AGENT_VOLUMES_DEV": f"{dev}:/var/lib/runtime:rw",
        "DEPLOY_AGENT_VOLUMES_PROD": f"{prod}:/var/lib/runtime:rw",
    }
    assert load_config(filled).auth == "cloudflare-access"


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
