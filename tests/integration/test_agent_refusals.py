"""Every refusal answers with the JSON error body and leaves Docker exactly as it was."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import docker
import pytest

from realparts import PREFIX, RUNTIME_ENV, Agent, AgentFactory, Images, plan_data

Body = dict[str, Any]


def _edit(change: Callable[[Body], None]) -> Callable[[Images], Body]:
    def build(images: Images) -> Body:
        body: Body = {"plan": plan_data(images, "1.0.0"), "env": dict(RUNTIME_ENV)}
        change(body)
        return body

    return build


def _set(path: str, value: Any) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _steps(change: Callable[[list[Any]], Any]) -> Callable[[Body], None]:
    def edit(body: Body) -> None:
        result = change(body["plan"]["steps"])
        if result is not None:
            body["plan"]["steps"] = result

    return edit


# (id, body builder, expected JSON path in details, fragment of its message)
REFUSALS: list[tuple[str, Callable[[Images], Body], str, str]] = [
    ("five-steps", _edit(_steps(lambda s: [*s, copy.deepcopy(s[3])])), "$.steps", "found 5 items"),
    ("three-steps", _edit(_steps(lambda s: s[:3])), "$.steps", "found 3 items"),
    ("reordered", _edit(_steps(lambda s: [s[1], s[0], s[2], s[3]])), "$.steps[0].action", "step 1 must be 'pull'"),
    ("unknown-action", _edit(_set("plan.steps.2.action", "exec")), "$.steps[2].action", "step 3 must be 'start'"),
    ("extra-top-key", _edit(_set("plan.hosts", ["a"])), "$.hosts", "unknown key 'hosts'"),
    ("privileged", _edit(_set("plan.steps.2.privileged", True)), "$.steps[2].privileged", "unknown key"),
    ("volumes-in-plan", _edit(_set("plan.steps.2.volumes", ["/:/host"])), "$.steps[2].volumes", "unknown key"),
    ("command-in-plan", _edit(_set("plan.steps.2.command", "sh")), "$.steps[2].command", "unknown key"),
    ("foreign-repository", _edit(_set("plan.image", "ghcr.io/evil/x/runtime:1.0.0")), "$.image", "not the repository"),
    ("latest", _edit(_set("plan.image", "ghcr.io/evil/x/runtime:latest")), "$.image", "not valid"),
    ("short-sha", _edit(_set("plan.image", "ghcr.io/a/b/runtime:abc1234")), "$.image", "not valid"),
    ("v-prefix", _edit(_set("plan.image", "ghcr.io/a/b/runtime:v1.0.0")), "$.image", "not valid"),
    ("stable-above-timeout", _edit(_set("plan.steps.3.stable_for", 300)), "$.steps[3].stable_for", "above"),
    ("missing-option", _edit(lambda b: b["plan"]["steps"][0].pop("timeout")), "$.steps[0]", "missing required key"),
    ("bool-timeout", _edit(_set("plan.steps.0.timeout", True)), "$.steps[0].timeout", "expected an integer"),
    ("prod-without-confirm", _edit(_set("plan.environment", "prod")), "$.confirm", "prod:1.0.0"),
    (
        "prod-wrong-confirm",
        _edit(lambda b: b.update(confirm="prod:1.0.1") or b["plan"].update(environment="prod")),
        "$.confirm",
        "prod:1.0.0",
    ),
    ("lowercase-env-name", _edit(_set("env.runtime_env", "dev")), "$.env.runtime_env", "not a valid variable name"),
    ("numeric-env-value", _edit(_set("env.RUNTIME_LOG_LEVEL", 3)), "$.env.RUNTIME_LOG_LEVEL", "must be a string"),
    ("env-not-object", _edit(_set("env", ["RUNTIME_ENV=dev"])), "$.env", "must be an object"),
    ("no-env", _edit(lambda b: b.pop("env")), "$", "missing required key 'env'"),
    ("no-plan", _edit(lambda b: b.pop("plan")), "$", "missing required key 'plan'"),
    ("extra-request-key", _edit(_set("hosts", "all")), "$.hosts", "unknown key"),
    ("dry-run-not-bool", _edit(_set("dry_run", "yes")), "$.dry_run", "expected"),
]


@pytest.fixture
def agent(module_agent: Agent) -> Agent:
    """Refusals leave Docker and the agent's deployments as they were, so the module shares one agent. Its
    tests refuse far more than 30 requests a minute of one identity: each starts with none counted (the limit
    has its own tests, in test_abuse_limits.py)."""
    (module_agent.state_dir / "refusals.json").unlink(missing_ok=True)
    return module_agent


def _docker_snapshot(client: docker.DockerClient) -> list[tuple[str, str, str]]:
    # Only the suite's own containers: other work on this engine may come and go meanwhile.
    return sorted((c.id, c.status, c.name or "") for c in client.containers.list(all=True, filters={"name": PREFIX}))


@pytest.mark.parametrize(("build", "path", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_before_anything_is_touched(
    agent: Agent,
    images: Images,
    docker_client: docker.DockerClient,
    build: Callable[[Images], Body],
    path: str,
    fragment: str,
) -> None:
    before = _docker_snapshot(docker_client)
    response = agent.post(build(images))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "plan_refused"
    assert any(d["path"] == path and fragment in d["message"] for d in error["details"]), error["details"]
    assert _docker_snapshot(docker_client) == before
    assert agent.get("/v1/status").json()["environments"]["dev"]["last_deployment"] is None


def test_an_environment_not_served_is_refused(make_agent: AgentFactory, images: Images) -> None:
    agent = make_agent(environments=("dev",))
    response = agent.post({"plan": plan_data(images, "1.0.0", env="prod"), "env": RUNTIME_ENV, "confirm": "prod:1.0.0"})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details == [{"path": "$.environment", "message": "this agent does not serve 'prod' (it serves dev)"}]


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b'{"plan": {}}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"x" * (300 * 1024), {"Content-Type": "application/json"}, 413, "payload_too_large"),
    ],
    ids=["not-json", "not-json-content-type", "300-KiB"],
)
def test_malformed_requests(
    agent: Agent, docker_client: docker.DockerClient, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    before = _docker_snapshot(docker_client)
    response = agent.http.post(agent.url + "/v1/deploy", data=data, headers={**agent.headers(), **headers}, timeout=30)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert _docker_snapshot(docker_client) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nope", 404, "not_found"),
        ("DELETE", "/v1/status", 405, "method_not_allowed"),
        ("GET", "/v1/deployments/unknown", 404, "not_found"),
        ("GET", "/v1/status?env=staging", 404, "not_found"),
        ("GET", "/v1/audit?after=x", 400, "bad_request"),
    ],
)
def test_http_errors_share_one_json_body(agent: Agent, method: str, path: str, status: int, code: str) -> None:
    response = agent.http.request(method, agent.url + path, headers=agent.headers(), timeout=30)
    assert response.status_code == status
    body = response.json()
    assert body["error"]["code"] == code
    assert set(body["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_unauthenticated_requests_are_refused(agent: Agent, images: Images, headers: dict[str, str]) -> None:
    body = json.dumps({"plan": plan_data(images, "1.0.0"), "env": RUNTIME_ENV})
    for method, path in (("POST", "/v1/deploy"), ("GET", "/v1/status"), ("GET", "/v1/audit")):
        response = agent.http.request(
            method, agent.url + path, data=body, headers={"Content-Type": "application/json", **headers}, timeout=30
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert agent.token not in agent.server.log_text()
    assert agent.http.get(agent.url + "/healthz", timeout=30).json() == {"ok": True}


def test_every_finding_is_listed_at_once(agent: Agent, images: Images) -> None:
    plan = plan_data(images, "1.0.0", env="prod")
    plan["image"] = "ghcr.io/someone/else/runtime:1.0.0"
    response = agent.post({"plan": plan, "env": {"lower": "x", "OK": 1}})
    assert response.status_code == 422
    paths = sorted(d["path"] for d in response.json()["error"]["details"])
    assert paths == ["$.confirm", "$.env.OK", "$.env.lower", "$.image"]
