"""The agent API against `schemas/agent-api.openapi.yaml`: the document is valid and names everything the
contract names, and the real agent under gunicorn answers only what the document says (schemathesis)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import hypothesis
import pytest
import requests
import schemathesis
import yaml
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import lab
from realparts import PREFIX, REPO, RUNTIME_ENV, Agent, Cli, Images, agent_env, plan_data

DOCUMENT = REPO / "schemas" / "agent-api.openapi.yaml"
# Loaded from its path, so the relative `$ref`s to the JSON Schemas beside it resolve.
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=25,
    deterministic=True,
    # The test sends the real bearer token; generated credentials would only ever meet a 401.
    with_security_parameters=False,
    database="none",
)
# A documented 503 is conformant; the property test adds not_a_server_error, as nothing it sends should fail so.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CHECKS = [not_a_server_error, *CONFORMANCE, negative_data_rejection, ignored_auth]

# What SPEC.md names: every endpoint, and every error code with its status.
SPEC_ENDPOINTS = {
    ("post", "/v1/deploy"),
    ("get", "/v1/deployments/{deployment_id}"),
    ("get", "/v1/deployments"),
    ("get", "/v1/status"),
    ("get", "/v1/audit"),
    ("get", "/v1/logs/{env}"),
    ("post", "/v1/prune"),
    ("get", "/v1/metrics"),
    ("get", "/v1/whoami"),
    ("get", "/healthz"),
}
SPEC_ERRORS = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "deploy_in_progress": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "plan_refused": 422,
    "too_many_requests": 429,
    "docker_unavailable": 503,
    "audit_broken": 503,
    "server_not_ready": 503,
    "internal": 500,
}
ERRORS = {**SPEC_ERRORS, "auth_unavailable": 503}


@pytest.fixture(autouse=True)
def _no_refusals_counted(request: pytest.FixtureRequest) -> None:
    """The module's agent is refused far more than 30 times a minute by one identity (the generated cases): each
    test starts with none counted, so a real deploy after them is not a 429. The limit has its own tests."""
    if "api" in request.fixturenames:
        agent: Agent = request.getfixturevalue("api")
        (agent.state_dir / "refusals.json").unlink(missing_ok=True)


def _start(cli: Cli, images: Images, tmp: Path, *, name: str, extra: dict[str, str] | None = None) -> Agent:
    """A real agent under gunicorn serving dev and prod, its containers named `name-<env>`."""
    containers = {env: f"{name}-{env}" for env in ("dev", "prod")}
    data_dir = tmp / "data"
    data_dir.mkdir(exist_ok=True)
    token = secrets.token_hex(24)
    env = agent_env(
        images,
        state_dir=tmp / "state",
        containers=containers,
        token=token,
        volumes=f"{data_dir}:/var/lib/runtime:rw",
    )
    server = lab.AgentServer(
        {**env, **(extra or {})}, log_path=tmp / "agent.log", command=[str(cli.bin_dir / "deploy-agent")]
    )
    return Agent(server.start(), token=token, containers=containers, state_dir=tmp / "state", data_dir=data_dir)


@pytest.fixture(scope="module")
def api(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agent]:
    """One agent for the module; whatever it started in Docker is removed after it."""
    name = f"{PREFIX}-contract-{secrets.token_hex(3)}"
    agent = _start(cli, images, tmp_path_factory.mktemp("contract"), name=name)
    try:
        yield agent
    finally:
        agent.close()
        lab.remove_containers(docker_client, name)


def conforms(response: requests.Response, method: str, path: str, **case: Any) -> None:
    """`response` is one the document allows for this operation: a documented status, content type and body."""
    SCHEMA[path][method].Case(**case).validate_response(response, checks=CONFORMANCE)


def _log_tail(agent: Agent) -> str:
    return agent.server.log_text()[-6000:]


# -- the document


def test_the_document_is_a_valid_openapi_3_1_document_whose_refs_resolve() -> None:
    SCHEMA.validate()
    assert SCHEMA.raw_schema["openapi"].startswith("3.1.")
    operation = SCHEMA["/v1/deploy"]["POST"]
    # The request body is deploy-request.schema.json, and through it plan.schema.json.
    strategy = operation.as_strategy()

    @hypothesis.given(strategy)
    @hypothesis.settings(max_examples=1, database=None, derandomize=True, deadline=None)
    def generated(case: schemathesis.Case) -> None:
        assert {"plan", "env"} <= set(case.body)
        assert {"version", "plan", "environment", "image", "steps"} <= set(case.body["plan"])

    generated()


def test_the_document_names_every_endpoint_and_error_code_of_the_contract() -> None:
    document = yaml.safe_load(DOCUMENT.read_text())
    components = document["components"]
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == SPEC_ENDPOINTS

    codes = set(components["schemas"]["ErrorCode"]["enum"])
    assert set(SPEC_ERRORS) <= codes
    assert codes == set(ERRORS)
    documented: set[tuple[str, int]] = set()
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                documented |= {(code, int(status)) for code in _codes(document, response)}
    # 405 is the answer to a method no operation has, so no operation lists it; the components describe it.
    documented |= {(code, 405) for code in _codes(document, {"$ref": "#/components/schemas/MethodNotAllowedError"})}
    # Each code under the status the contract gives it, and under no other.
    assert set(SPEC_ERRORS.items()) <= documented
    assert documented == set(ERRORS.items())

    security = components["securitySchemes"]
    assert security["bearerToken"] == {**security["bearerToken"], "type": "http", "scheme": "bearer"}
    assert security["cloudflareAccess"] == {
        **security["cloudflareAccess"],
        "type": "apiKey",
        "in": "header",
        "name": "Cf-Access-Jwt-Assertion",
    }
    assert document["paths"]["/healthz"]["get"]["security"] == []


def _codes(document: dict[str, Any], node: Any) -> set[str]:
    """The error codes a response (or schema) allows: the narrowest `code` const or enum found under it."""
    if not isinstance(node, dict):
        return set()
    if "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        narrowed = _codes(document, {k: v for k, v in node.items() if k != "$ref"})
        return narrowed or _codes(document, target)
    code = node.get("properties", {}).get("code")
    if isinstance(code, dict) and ("const" in code or "enum" in code):
        return {code["const"]} if "const" in code else set(code["enum"])
    if code is not None:
        return _codes(document, code)
    found: set[str] = set()
    for key in ("content", "application/json", "schema", "properties", "error"):
        found |= _codes(document, node.get(key))
    return found


# -- the real agent against the document


@SCHEMA.parametrize()
@hypothesis.settings(
    deadline=None,
    derandomize=True,
    database=None,
    # Generating whole plans is slow and often filtered; that is expected, not a problem with the test.
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
        hypothesis.HealthCheck.data_too_large,
    ],
)
def test_the_agent_answers_only_what_the_document_says(case: schemathesis.Case, api: Agent) -> None:
    response = case.call(base_url=api.url, session=api.http, headers=api.headers(), timeout=30)
    if response.status_code >= 500:
        pytest.fail(
            f"{case.method} {response.request.url} answered {response.status_code}: {response.text}\n"
            f"body sent: {json.dumps(case.body, default=str)[:2000]}\nagent log:\n{_log_tail(api)}"
        )
    if response.status_code == 202:
        # A generated plan for this agent's own repository started a real deploy: let it end before moving on.
        api.wait(response.json()["deployment_id"])
    case.validate_response(
        response, checks=CHECKS, headers=api.headers(), transport_kwargs={"base_url": api.url, "session": api.http}
    )


def test_a_dry_run_a_deploy_and_what_it_leaves_behind_match_the_document(api: Agent, images: Images) -> None:
    plan = plan_data(images, "1.0.0", stable_for=2)
    dry = api.post({"plan": plan, "env": RUNTIME_ENV, "dry_run": True})
    assert dry.status_code == 200, dry.text
    conforms(dry, "POST", "/v1/deploy", body={"plan": plan, "env": RUNTIME_ENV, "dry_run": True})

    accepted = api.post({"plan": plan, "env": RUNTIME_ENV})
    assert accepted.status_code == 202, accepted.text
    conforms(accepted, "POST", "/v1/deploy", body={"plan": plan, "env": RUNTIME_ENV})
    deployment_id = accepted.json()["deployment_id"]

    busy = api.post({"plan": plan, "env": RUNTIME_ENV})
    assert busy.status_code == 409, busy.text
    conforms(busy, "POST", "/v1/deploy", body={"plan": plan, "env": RUNTIME_ENV})
    running = api.get(f"/v1/deployments/{deployment_id}")
    conforms(running, "GET", "/v1/deployments/{deployment_id}", path_parameters={"deployment_id": deployment_id})
    conforms(api.get("/v1/status"), "GET", "/v1/status")

    finished = api.wait(deployment_id)
    assert finished["state"] == "succeeded", finished
    done = api.get(f"/v1/deployments/{deployment_id}")
    conforms(done, "GET", "/v1/deployments/{deployment_id}", path_parameters={"deployment_id": deployment_id})
    status = api.get("/v1/status?env=dev")
    assert status.json()["environments"]["dev"]["state"] == "running", status.text
    conforms(status, "GET", "/v1/status", query={"env": "dev"})
    audit = api.get("/v1/audit")
    assert audit.json()["records"], audit.text
    conforms(audit, "GET", "/v1/audit")


def _send_a_large_body(api: Agent) -> requests.Response:
    """300 KiB, sent whole: the agent reads (and drops) the refused body, so the client gets the 413, not a reset."""
    headers = {**api.headers(), "Content-Type": "application/json"}
    return api.http.post(f"{api.url}/v1/deploy", data=b"x" * (300 * 1024), headers=headers, timeout=30)


def test_refusals_answer_as_the_document_says(api: Agent, images: Images) -> None:
    url, headers = api.url, api.headers()
    body = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV}
    answers = {
        415: api.http.post(
            f"{url}/v1/deploy", data=json.dumps(body), headers={**headers, "Content-Type": "text/plain"}
        ),
        400: api.http.post(f"{url}/v1/deploy", data="{", headers={**headers, "Content-Type": "application/json"}),
        413: _send_a_large_body(api),
        422: api.post({**body, "plan": {**body["plan"], "environment": "staging"}}),
        401: api.http.post(f"{url}/v1/deploy", json=body, headers={"Authorization": "Bearer wrong"}),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        conforms(response, "POST", "/v1/deploy", body=body)
    refused = answers[422].json()["error"]
    assert refused["details"] == [{"path": "$.environment", "message": refused["details"][0]["message"]}]

    missing = api.get("/v1/deployments/0123456789ab")
    assert missing.status_code == 404
    conforms(missing, "GET", "/v1/deployments/{deployment_id}", path_parameters={"deployment_id": "0123456789ab"})


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("after=0", 200),
        ("after=99999999", 200),
        ("after=-1", 400),
        ("after=x", 400),
        ("after=1.5", 400),
        # Digits to str.isdigit(), not ASCII digits: superscript two ("²" is no int() at all), fullwidth one.
        ("after=%C2%B2", 400),
        ("after=%EF%BC%91", 400),
    ],
)
def test_audit_after_is_a_non_negative_integer(api: Agent, query: str, status: int) -> None:
    response = api.get(f"/v1/audit?{query}")
    detail = _log_tail(api) if response.status_code >= 500 else ""
    assert response.status_code == status, (response.text, detail)
    conforms(response, "GET", "/v1/audit")


HOSTILE = ("plan-null", "nested-beyond-the-json-parser", "nested-plan-steps", "nul-in-env-value")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _hostile_bodies(images: Images) -> dict[str, tuple[str, set[int]]]:
    """Raw JSON bodies (all under 256 KiB) and the statuses each may get: a refusal, never a crash."""
    plan = json.dumps(plan_data(images, "1.0.0"))
    env = json.dumps(RUNTIME_ENV)
    return {
        "plan-null": (f'{{"plan": null, "env": {env}, "dry_run": true}}', {422}),
        # Too deep to parse, or deep enough to exhaust the checks' recursion: malformed, or a refused plan.
        "nested-beyond-the-json-parser": (_nested(100_000), {400}),
        "nested-plan-steps": (f'{{"plan": {{"version": 1, "steps": {_nested(900)}}}, "env": {env}}}', {400, 422}),
        # No process environment can hold a NUL: accepted, the deploy would remove the runtime, then fail to start.
        "nul-in-env-value": (f'{{"plan": {plan}, "env": {{"A": "x\\u0000y"}}, "dry_run": true}}', {422}),
    }


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_body_is_refused_before_anything_is_touched(api: Agent, images: Images, name: str) -> None:
    body, statuses = _hostile_bodies(images)[name]
    response = api.http.post(
        f"{api.url}/v1/deploy", data=body, headers={**api.headers(), "Content-Type": "application/json"}, timeout=30
    )
    if response.status_code == 202:
        api.wait(response.json()["deployment_id"])
    detail = _log_tail(api) if response.status_code >= 500 else ""
    assert response.status_code in statuses, (response.text, detail)
    conforms(response, "POST", "/v1/deploy")


def test_a_method_no_operation_has_answers_405_with_allow(api: Agent) -> None:
    document = yaml.safe_load(DOCUMENT.read_text())
    for path, item in document["paths"].items():
        url = api.url + path.replace("{deployment_id}", "0123456789ab")
        for method in {"get", "post", "put", "patch", "delete"} - set(item):
            response = api.http.request(method, url, headers=api.headers(), timeout=30)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["Content-Type"] == "application/json", (method, path)
            assert response.json()["error"]["code"] == "method_not_allowed", (method, path)
            # RFC 9110: a 405 must list the methods the resource has.
            allowed = {m.strip().lower() for m in response.headers.get("Allow", "").split(",")}
            assert set(item) <= allowed, (method, path, response.headers.get("Allow"))


def test_a_broken_audit_log_and_an_unreachable_docker_answer_as_the_document_says(
    cli: Cli, images: Images, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    record = {"seq": 1, "time": "2024-01-01T00:00:00.000000Z", "event": "x", "deployment_id": None, "actor": "a"}
    # A record whose hash does not match, then a torn line that is not JSON.
    (state / "audit.jsonl").write_text(json.dumps({**record, "prev": "0" * 64, "hash": "f" * 64}) + '\n{"seq\n')
    agent = _start(
        cli, images, tmp_path, name=f"{PREFIX}-broken", extra={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    )
    try:
        body = {"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV}
        deploy = agent.post(body)
        assert (deploy.status_code, deploy.json()["error"]["code"]) == (503, "audit_broken"), deploy.text
        conforms(deploy, "POST", "/v1/deploy", body=body)
        dry = agent.post({**body, "dry_run": True})
        assert (dry.status_code, dry.json()["error"]["code"]) == (503, "docker_unavailable"), dry.text
        conforms(dry, "POST", "/v1/deploy", body={**body, "dry_run": True})
        status = agent.get("/v1/status")
        assert status.json()["agent"] | {"docker": "unreachable", "audit": "broken"} == status.json()["agent"]
        assert {e["state"] for e in status.json()["environments"].values()} == {"unknown"}
        conforms(status, "GET", "/v1/status")
        audit = agent.get("/v1/audit")
        assert (audit.status_code, audit.json()["error"]["code"]) == (503, "audit_broken"), audit.text
        conforms(audit, "GET", "/v1/audit")
    finally:
        agent.close()


def test_access_keys_that_cannot_load_answer_as_the_document_says(cli: Cli, images: Images, tmp_path: Path) -> None:
    extra = {
        "DEPLOY_AGENT_AUTH": "cloudflare-access",
        "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": "contract.cloudflareaccess.com",
        "DEPLOY_AGENT_ACCESS_AUD": secrets.token_hex(32),
        "DEPLOY_AGENT_DEPLOYERS_DEV": "ci-dev.access",
        "DEPLOY_AGENT_DEPLOYERS_PROD": "ci-prod.access",
        # Nothing listens there: the keys never load.
        "DEPLOY_AGENT_ACCESS_CERTS_URL": f"http://127.0.0.1:{lab.free_port()}/cdn-cgi/access/certs",
    }
    agent = _start(cli, images, tmp_path, name=f"{PREFIX}-nokeys", extra=extra)
    # A well-formed RS256 JWT naming a key id: the agent must fetch the keys to judge it.
    token = ".".join(_b64url(part) for part in ({"alg": "RS256", "kid": "k1", "typ": "JWT"}, {"sub": "x"})) + ".c2ln"
    try:
        for path in ("/v1/status", "/v1/audit"):
            unavailable = agent.http.get(agent.url + path, headers={"Cf-Access-Jwt-Assertion": token}, timeout=30)
            assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (503, "auth_unavailable")
            conforms(unavailable, "GET", path)
            unauthorized = agent.http.get(agent.url + path, timeout=30)
            assert unauthorized.status_code == 401
            conforms(unauthorized, "GET", path)
    finally:
        agent.close()


def _b64url(part: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
