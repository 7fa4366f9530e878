"""DEPLOY_AGENT_AUTH=cloudflare-access against the real agent: keys made here, the team's JWKS served on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import jwt
import pytest
import requests

import lab
from accesskeys import CERTS, HEADER, ISSUER, PROD_TOKEN, SERVICE_TOKEN, TEAM, Issuer, Jwks, Key
from realparts import PREFIX, RUNTIME_ENV, Cli, Images, agent_env, plan_data

# -- the agent in cloudflare-access mode


@dataclass
class AccessAgent:
    server: lab.AgentServer
    issuer: Issuer
    state_dir: Path
    bearer: str
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, token: str | None = None, **headers: str) -> requests.Response:
        sent = {HEADER: token, **headers} if token is not None else headers
        return self.http.get(self.url + path, headers=sent, timeout=30)

    def deploy(self, body: Any, token: str | None = None, **headers: str) -> requests.Response:
        sent = {HEADER: token, **headers} if token is not None else headers
        return self.http.post(self.url + "/v1/deploy", json=body, headers=sent, timeout=30)

    def audit(self) -> str:
        path = self.state_dir / "audit.jsonl"
        return path.read_text() if path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.server.log_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return lines

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def start_agent(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., AccessAgent]]:
    """Start agents in cloudflare-access mode; all are stopped, and their containers removed, after the module."""
    started: list[tuple[AccessAgent, str]] = []

    def start(certs_url: str, *, workers: int | None = None) -> AccessAgent:
        name = f"{PREFIX}-access-{secrets.token_hex(3)}"
        tmp = tmp_path_factory.mktemp("access")
        bearer = secrets.token_hex(24)
        containers = {"dev": f"{name}-dev", "prod": f"{name}-prod"}
        env = agent_env(images, state_dir=tmp / "state", containers=containers, token=bearer, volumes="none")
        # DEPLOY_AGENT_TOKEN stays set: an operator's leftover must not open a second door in this mode.
        aud = secrets.token_hex(32)
        env |= {
            "DEPLOY_AGENT_AUTH": "cloudflare-access",
            "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": TEAM,
            "DEPLOY_AGENT_ACCESS_AUD": aud,
            "DEPLOY_AGENT_ACCESS_CERTS_URL": certs_url,
            # The module's service token may deploy dev only; people may read and dry-run.
            "DEPLOY_AGENT_DEPLOYERS_DEV": SERVICE_TOKEN,
            "DEPLOY_AGENT_DEPLOYERS_PROD": PROD_TOKEN,
        }
        if workers is not None:
            env["GUNICORN_CMD_ARGS"] = f"--workers {workers}"
        server = lab.AgentServer(env, log_path=tmp / "agent.log", command=[str(cli.bin_dir / "deploy-agent")])
        agent = AccessAgent(server=server, issuer=Issuer(aud=aud), state_dir=tmp / "state", bearer=bearer)
        started.append((agent, name))
        server.start()
        return agent

    yield start
    for agent, name in started:
        agent.close()
        lab.remove_containers(docker_client, name)


@dataclass(frozen=True)
class Setup:
    """The module's agent, its team JWKS, the key in it and one that is not."""

    agent: AccessAgent
    jwks: Jwks
    key: Key
    other: Key


@pytest.fixture(scope="module")
def access(start_agent: Callable[..., AccessAgent]) -> Iterator[Setup]:
    """One agent (the project's gunicorn config: two workers) whose team JWKS holds one key."""
    key, other = Key.new(), Key.new()
    jwks = Jwks()
    jwks.serve(key)
    try:
        yield Setup(agent=start_agent(jwks.url), jwks=jwks, key=key, other=other)
    finally:
        jwks.close()


def _containers(client: docker.DockerClient) -> list[tuple[str, str, str]]:
    """This session's containers (other sessions may share the engine); the audit log covers the rest."""
    found = client.containers.list(all=True, filters={"name": PREFIX})
    return sorted((c.id, c.status, c.name or "") for c in found if (c.name or "").startswith(PREFIX))


def _actors(agent: AccessAgent, path: str) -> set[Any]:
    return {
        line.get("actor") for line in agent.log_lines() if line.get("event") == "request" and line.get("path") == path
    }


# -- accepted


def test_a_service_token_is_accepted_as_its_common_name(access: Setup) -> None:
    response = access.agent.get("/v1/status", access.agent.issuer.sign(access.key))
    assert response.status_code == 200, response.text
    assert "dev" in response.json()["environments"]
    assert SERVICE_TOKEN in _actors(access.agent, "/v1/status")


def test_a_user_token_is_accepted_as_its_email(access: Setup) -> None:
    issuer = access.agent.issuer
    email = f"ops-{secrets.token_hex(3)}@example.com"
    response = access.agent.get("/v1/status", issuer.sign(access.key, issuer.user_claims(email)))
    assert response.status_code == 200, response.text
    assert email in _actors(access.agent, "/v1/status")


def test_an_aud_list_that_contains_ours_is_accepted(access: Setup) -> None:
    issuer = access.agent.issuer
    claims = issuer.claims(aud=[secrets.token_hex(32), issuer.aud, secrets.token_hex(32)])
    assert access.agent.get("/v1/status", issuer.sign(access.key, claims)).status_code == 200


def test_a_dry_run_with_a_service_token(access: Setup, images: Images, docker_client: docker.DockerClient) -> None:
    before = _containers(docker_client)
    body = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV, "dry_run": True}
    response = access.agent.deploy(body, access.agent.issuer.sign(access.key))
    assert response.status_code == 200, response.text
    assert response.json()["dry_run"] is True
    assert _containers(docker_client) == before


def test_the_dry_run_says_whether_this_caller_may_deploy(access: Setup, images: Images) -> None:
    """A caller not in DEPLOY_AGENT_DEPLOYERS_<ENV> learns it from the dry run, before a workflow run is approved."""
    issuer, before = access.agent.issuer, access.agent.audit()
    dev_token = issuer.sign(access.key, issuer.claims(common_name=SERVICE_TOKEN))
    reader = issuer.sign(access.key, issuer.user_claims("reader@example.com"))
    dev = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV, "dry_run": True}
    prod = {
        "plan": plan_data(images, "1.0.0", env="prod"),
        "env": RUNTIME_ENV,
        "confirm": "prod:1.0.0",
        "dry_run": True,
    }

    answers = [
        access.agent.deploy(body, token).json() for token, body in ((dev_token, dev), (dev_token, prod), (reader, dev))
    ]

    assert [a["may_deploy"] for a in answers] == [True, False, False]
    assert all(a["registry"] == {"found": True, "digest": images.digests["1.0.0"]} for a in answers), answers
    assert access.agent.audit() == before  # a dry run is not a refusal


def test_the_actor_of_a_refused_deploy_is_audited(access: Setup, images: Images) -> None:
    plan = plan_data(images, "1.0.0")
    plan["steps"] = plan["steps"][:3]
    response = access.agent.deploy({"plan": plan, "env": RUNTIME_ENV}, access.agent.issuer.sign(access.key))
    assert response.status_code == 422, response.text
    records = [json.loads(line) for line in access.agent.audit().splitlines()]
    assert [r["actor"] for r in records if r["event"] == "deploy_refused"] == [SERVICE_TOKEN]


# -- refused: 401 with the JSON error body, before anything is touched

Case = Callable[[Setup], dict[str, str]]


def _header(make: Callable[[Setup], str]) -> Case:
    return lambda s: {HEADER: make(s)}


def _signed(change: Callable[[Issuer], dict[str, Any]]) -> Case:
    return _header(lambda s: s.agent.issuer.sign(s.key, change(s.agent.issuer)))


def _hs256_with_public_pem(s: Setup) -> str:
    # PyJWT refuses a PEM as an HMAC secret; the attack is built by hand.
    secret = s.key.public_pem()

    def sign(data: bytes) -> bytes:
        return hmac.new(secret, data, hashlib.sha256).digest()

    return s.agent.issuer.raw({"alg": "HS256", "typ": "JWT", "kid": s.key.kid}, s.agent.issuer.claims(), sign)


def _cookie_only(s: Setup) -> dict[str, str]:
    return {"Cookie": f"CF_Authorization={s.agent.issuer.sign(s.key)}"}


REFUSED: list[tuple[str, Case]] = [
    ("no-header", lambda s: {}),
    ("empty", lambda s: {HEADER: ""}),
    ("garbage", lambda s: {HEADER: s.agent.issuer.remember("not-a-jwt")}),
    ("three-garbage-parts", lambda s: {HEADER: s.agent.issuer.remember("e30.e30.e30")}),
    (
        "alg-none",
        _header(lambda s: s.agent.issuer.raw({"alg": "none", "kid": s.key.kid}, s.agent.issuer.claims())),
    ),
    ("hs256-public-pem", _header(_hs256_with_public_pem)),
    ("rs512", _header(lambda s: s.agent.issuer.sign(s.key, alg="RS512"))),
    ("unknown-key", _header(lambda s: s.agent.issuer.sign(s.other))),
    ("known-kid-other-key", _header(lambda s: s.agent.issuer.sign(s.other, kid=s.key.kid))),
    (
        "no-kid",
        _header(lambda s: s.agent.issuer.remember(jwt.encode(s.agent.issuer.claims(), s.key.private, "RS256"))),
    ),
    ("wrong-aud", _signed(lambda i: i.claims(aud=secrets.token_hex(32)))),
    ("aud-list-without-ours", _signed(lambda i: i.claims(aud=[secrets.token_hex(32), secrets.token_hex(32)]))),
    ("no-aud", _signed(lambda i: i.claims(aud=None))),
    ("wrong-iss", _signed(lambda i: i.claims(iss="https://evil.cloudflareaccess.com"))),
    ("iss-prefix", _signed(lambda i: i.claims(iss=ISSUER + ".evil.example"))),
    ("no-iss", _signed(lambda i: i.claims(iss=None))),
    ("expired", _signed(lambda i: i.claims(exp=int(time.time()) - 300))),
    ("nbf-in-future", _signed(lambda i: i.user_claims("ops@example.com", nbf=int(time.time()) + 300))),
    ("no-exp", _signed(lambda i: i.claims(exp=None))),
    ("no-one", _signed(lambda i: i.claims(common_name=None))),
    ("cookie-only", _cookie_only),
    ("bearer-token", lambda s: {"Authorization": f"Bearer {s.agent.bearer}"}),
]


@pytest.mark.parametrize("case", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_before_anything_is_touched(
    access: Setup, images: Images, docker_client: docker.DockerClient, case: Case
) -> None:
    before, audit = _containers(docker_client), access.agent.audit()
    body = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV}
    response = access.agent.deploy(body, **case(access))
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert set(error) == {"code", "message", "details"}
    assert access.agent.get("/v1/audit", **case(access)).status_code == 401
    assert _containers(docker_client) == before
    assert access.agent.audit() == audit


def test_a_20_kb_header_is_refused_without_a_5xx(access: Setup) -> None:
    token = access.agent.issuer.remember("x" * 20 * 1024)
    # gunicorn refuses a header field above 8190 bytes itself (400); a 7 KiB one reaches the agent: 401.
    assert 400 <= access.agent.get("/v1/status", token).status_code < 500
    token = access.agent.issuer.remember("x" * 7 * 1024)
    response = access.agent.get("/v1/status", token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_worker(access: Setup) -> None:
    issuer = access.agent.issuer
    tokens = [issuer.sign(access.other, kid=secrets.token_hex(32)) for _ in range(50)]
    before = access.jwks.hits

    def get(token: str) -> int:
        # One connection per request, so both workers take their share.
        return requests.get(access.agent.url + "/v1/status", headers={HEADER: token}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(get, tokens))
    assert statuses == [401] * 50
    assert access.jwks.hits - before <= 2
    assert access.agent.get("/v1/status", issuer.sign(access.key)).status_code == 200


# -- deploy rights per environment


def test_the_dev_token_cannot_deploy_prod_and_a_reader_cannot_deploy_at_all(
    access: Setup, images: Images, docker_client: docker.DockerClient
) -> None:
    """Found in review: any identity Access let in (the dev workflow's token, a person) could deploy prod with
    confirm and skip prod's required reviewers."""
    agent, issuer = access.agent, access.agent.issuer
    dev_token = issuer.sign(access.key, issuer.claims(common_name=SERVICE_TOKEN))
    person = issuer.sign(access.key, issuer.user_claims("reader@example.com"))
    prod = {"plan": plan_data(images, "1.0.0", env="prod"), "env": RUNTIME_ENV, "confirm": "prod:1.0.0"}
    dev = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV}
    before, audit_before = _containers(docker_client), agent.audit()

    for token, body, who in ((dev_token, prod, SERVICE_TOKEN), (person, dev, "reader@example.com")):
        response = agent.deploy(body, token)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
        refused = json.loads(agent.audit().splitlines()[-1])
        assert (refused["event"], refused["actor"]) == ("deploy_refused", who)

    assert _containers(docker_client) == before
    assert len(agent.audit().splitlines()) == len(audit_before.splitlines()) + 2
    # A person may still look, and ask what a deploy would do.
    assert agent.get("/v1/status", person).status_code == 200
    assert agent.deploy({**prod, "dry_run": True}, person).status_code == 200


def test_healthz_needs_no_token(access: Setup) -> None:
    response = access.agent.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


# -- key rotation, and the JWKS down at startup


def test_rotation_new_key_accepted_after_one_refetch_removed_key_dropped(
    start_agent: Callable[..., AccessAgent],
) -> None:
    old, new = Key.new(), Key.new()
    jwks = Jwks()
    try:
        jwks.serve(old)
        # One worker: each worker keeps its own cache, and this follows one cache through the rotation.
        agent = start_agent(jwks.url, workers=1)
        assert jwks.hits == 1
        assert agent.get("/v1/status", agent.issuer.sign(old)).status_code == 200
        jwks.serve(new)
        assert agent.get("/v1/status", agent.issuer.sign(new)).status_code == 200
        assert jwks.hits == 2
        # The refetch that brought the new key dropped the old one.
        response = agent.get("/v1/status", agent.issuer.sign(old))
        assert response.status_code == 401
        assert "does not hold" in response.json()["error"]["message"]
        # Within the minute, another unknown kid is refused without a fetch.
        assert agent.get("/v1/status", agent.issuer.sign(Key.new())).status_code == 401
        assert agent.get("/v1/status", agent.issuer.sign(new)).status_code == 200
        assert jwks.hits == 2
    finally:
        jwks.close()
    _assert_no_token_logged(agent)


def test_jwks_down_at_startup_then_up(start_agent: Callable[..., AccessAgent]) -> None:
    key = Key.new()
    port = lab.free_port()
    agent = start_agent(f"http://127.0.0.1:{port}{CERTS}")  # nothing listens there yet
    token = agent.issuer.sign(key)

    def unavailable() -> str:
        """The caller learns only that the keys cannot be loaded; the URL and the reason are in the agent's log."""
        response = agent.get("/v1/status", token)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error == {
            "code": "auth_unavailable",
            "message": "the signing keys cannot be loaded; retry shortly",
            "details": [],
        }
        assert str(port) not in response.text and "127.0.0.1" not in response.text
        logged = [line for line in agent.log_lines() if line.get("event") == "access keys unavailable: answered 503"]
        return " ".join(str(line.get("reason")) for line in logged)

    assert agent.get("/healthz").status_code == 200
    assert "unreachable" in unavailable()
    assert any(line.get("event") == "access keys not fetched" for line in agent.log_lines())

    jwks = Jwks(port=port)
    try:
        jwks.fail(503)
        start, requests_sent = time.monotonic(), 1
        # The same connection, so the same worker: it tries again within a few seconds, and still has no keys.
        while "HTTP 503" not in unavailable():
            assert time.monotonic() - start < 10, "the agent never tried the JWKS again"
            requests_sent += 1
            time.sleep(0.1)
        jwks.serve(key)
        while (response := agent.get("/v1/status", token)).status_code != 200:
            assert response.status_code == 503, response.text
            assert time.monotonic() - start < 20, "the agent did not recover by itself"
            requests_sent += 1
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        # One try every few seconds per worker (two workers), never one per request.
        assert jwks.hits <= 2 * (elapsed / 3 + 2) < requests_sent, (jwks.hits, requests_sent, elapsed)
    finally:
        jwks.close()
    assert any(line.get("event") == "access keys loaded" for line in agent.log_lines())
    _assert_no_token_logged(agent)


def _assert_no_token_logged(agent: AccessAgent) -> None:
    text = agent.server.log_text()
    assert agent.issuer.issued
    for token in agent.issuer.issued:
        signature = token.rpartition(".")[2]
        assert token not in text
        assert len(signature) < 16 or signature not in text
    assert "eyJ" not in text  # no JWT at all: every header and payload starts so


def test_no_token_in_the_log(access: Setup) -> None:
    access.agent.get("/v1/status", access.agent.issuer.sign(access.key))
    access.agent.get("/v1/status", access.agent.issuer.sign(access.other))
    _assert_no_token_logged(access.agent)
