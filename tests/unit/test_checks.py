"""`deploy-agent check`, the checks that need no Docker: plain data in, result lines out (Docker's own checks run
against the real engine in tests/integration/test_preflight.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.checks import CHECKS, bind_address, mount_sources, run_checks, state_directory, variables
from agent.preflight import Check, Line
from conftest import AGENT_ENV
from fakedocker import FakeDocker


def lines(environ: dict[str, str], *checks: Check) -> list[Line]:
    return run_checks(environ, checks=checks, connect=FakeDocker(reachable=False).connect)


def good(tmp_path: Path, **changes: str) -> dict[str, str]:
    return {**AGENT_ENV, "DEPLOY_AGENT_STATE_DIR": str(tmp_path / "state"), **changes}


@pytest.mark.parametrize(
    ("bind", "status"),
    [
        ("127.0.0.1:8700", "ok"),
        ("127.0.0.2:8700", "ok"),
        ("localhost:8700", "ok"),
        ("[::1]:8700", "ok"),
        ("0.0.0.0:8700", "warn"),
        ("10.0.0.5:8700", "warn"),
        ("[::]:8700", "warn"),
        ("deploy.internal:8700", "warn"),
    ],
)
def test_a_bind_address_that_is_not_loopback_is_a_warning(tmp_path: Path, bind: str, status: str) -> None:
    [line] = lines(good(tmp_path, DEPLOY_AGENT_BIND=bind), bind_address)
    assert (line.status, line.what) == (status, "DEPLOY_AGENT_BIND")


def test_every_problem_of_the_variables_is_a_fail_line(tmp_path: Path) -> None:
    environ = good(tmp_path, DEPLOY_AGENT_DEPLOYER_PROD="x", DEPLOY_AGENT_RESTART_POLICY="sometimes")
    found = lines(environ, variables, state_directory, mount_sources)
    assert [(line.status, line.what) for line in found] == [
        ("FAIL", "DEPLOY_AGENT_RESTART_POLICY"),
        ("FAIL", "DEPLOY_AGENT_DEPLOYER_PROD"),
        ("warn", "state directory"),
        ("warn", "mount sources"),
    ]
    assert "did you mean DEPLOY_AGENT_DEPLOYERS_PROD?" in found[1].reason


def test_access_settings_left_with_token_auth_are_a_warning(tmp_path: Path) -> None:
    found = lines(good(tmp_path, DEPLOY_AGENT_DEPLOYERS_PROD="ci-prod.access"), variables)
    assert [line.status for line in found] == ["ok", "warn"]
    assert found[1].reason.startswith("DEPLOY_AGENT_DEPLOYERS_PROD set, but DEPLOY_AGENT_AUTH=token")


@pytest.mark.parametrize(
    ("mode", "status", "says"),
    [
        (0o700, "ok", "mode 0700, writable by this user"),
        (0o755, "ok", "mode 0755, writable by this user"),
        (0o770, "FAIL", "writable by its group or by everyone (mode 0770): the agent refuses to start"),
        (0o707, "FAIL", "writable by its group or by everyone (mode 0707)"),
    ],
)
def test_the_state_directory(tmp_path: Path, mode: int, status: str, says: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    [line] = lines(good(tmp_path), state_directory)
    assert (line.status, line.what) == (status, f"state directory {state}")
    assert says in line.reason


def test_a_missing_state_directory_is_not_created(tmp_path: Path) -> None:
    [line] = lines(good(tmp_path), state_directory)
    assert (line.status, line.reason) == ("ok", "does not exist yet; the agent creates it (mode 0700)")
    assert not (tmp_path / "state").exists()


def test_each_mount_source_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "prod-data"
    found = lines(good(tmp_path, DEPLOY_AGENT_VOLUMES_PROD=f"{missing}:/data:ro"), mount_sources)
    assert [(line.status, line.what) for line in found] == [
        ("ok", "DEPLOY_AGENT_VOLUMES_DEV"),
        ("FAIL", "DEPLOY_AGENT_VOLUMES_PROD"),
    ]
    assert found[1].reason.startswith(f"the mount source {missing} does not exist")
    assert not missing.exists()


def test_without_docker_its_checks_fail_or_warn_never_ok(tmp_path: Path) -> None:
    found = {line.what: line.status for line in lines(good(tmp_path), *CHECKS)}
    assert found["Docker Engine"] == "FAIL"
    assert found["Docker's filesystem"] == "warn"
    assert found["registry registry.test"] == "ok"  # no credentials set: nothing to log in with


def test_a_result_line_reads_status_what_and_why() -> None:
    assert str(Line("warn", "DEPLOY_AGENT_BIND", "not loopback")) == "warn  DEPLOY_AGENT_BIND: not loopback"
    assert str(Line("FAIL", "Docker Engine", "gone")) == "FAIL  Docker Engine: gone"


def test_the_teams_access_keys_are_fetched_once_and_named(tmp_path: Path) -> None:
    from accesskeys import TEAM, Jwks, Key
    from agent.checks import access_keys

    key, served = Key.new(), Jwks()
    served.serve(key)
    try:
        access = {
            "DEPLOY_AGENT_AUTH": "cloudflare-access",
            "DEPLOY_AGENT_TOKEN": "",
            "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": TEAM,
            "DEPLOY_AGENT_ACCESS_AUD": "a" * 64,
            "DEPLOY_AGENT_ACCESS_CERTS_URL": served.url,
            "DEPLOY_AGENT_DEPLOYERS_DEV": "ci-dev.access",
            "DEPLOY_AGENT_DEPLOYERS_PROD": "ci-prod.access",
        }
        environ = {k: v for k, v in good(tmp_path, **access).items() if v}
        [fetched] = lines(environ, access_keys)
        served.status = 404
        [failed] = lines(environ, access_keys)
    finally:
        served.close()
    assert (fetched.status, fetched.reason) == ("ok", f"1 RS256 key(s) at {served.url}")
    assert failed.status == "FAIL"
    assert failed.reason.startswith(f"{served.url} answered HTTP 404: every authenticated request would answer 503")
    assert lines(good(tmp_path), access_keys) == []  # token auth: no keys to fetch


def test_the_github_issuers_keys_are_fetched_through_its_discovery_document(tmp_path: Path) -> None:
    from accesskeys import Jwks, Key
    from agent.checks import github_oidc_keys
    from githuboidc import agent_settings

    served = Jwks()
    served.serve(Key.new(), Key.new())
    try:
        environ = good(tmp_path, **agent_settings(served))
        [fetched] = lines(environ, github_oidc_keys)
        served.discovery = b'{"issuer": "https://token.actions.githubusercontent.com", "jwks_uri": "https://x/jwks"}'
        [foreign] = lines(environ, github_oidc_keys)
        served.discovery, served.status = None, 503
        [down] = lines(environ, github_oidc_keys)
    finally:
        served.close()
    assert (fetched.status, fetched.what) == ("ok", "GitHub OIDC keys")
    assert fetched.reason == f"2 RS256 key(s) named by {served.issuer}'s discovery document"
    assert foreign.status == "FAIL" and f"does not describe the issuer {served.issuer}" in foreign.reason
    assert down.status == "FAIL" and "answered HTTP 503: every real deploy would answer 503" in down.reason
    assert lines(good(tmp_path), github_oidc_keys) == []  # DEPLOY_AGENT_GITHUB_OIDC=off: no issuer to ask
