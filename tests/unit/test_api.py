"""The agent's HTTP contract through Flask's test client: refusals, bad input, reads; Docker is a recording fake."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

import pytest

from agent import gunicorn_conf
from agent.auditlog import AuditError, AuditLog
from agent.lock import try_lock
from agent.threadshares import LongPolls
from conftest import DEV_VOLUME, RUNTIME_ENV, Api, plan, record_deployment
from fakedocker import FakeContainer, FakeDocker
from runner.core.chain import verify_lines

V1_PATHS = [
    ("GET", "/v1/status"),
    ("GET", "/v1/deployments"),
    ("GET", "/v1/deployments/abc"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/logs/dev"),
    ("POST", "/v1/deploy"),
    ("GET", "/v1/nothing-here"),
    ("DELETE", "/v1/status"),
]


def body(**changes: Any) -> dict[str, Any]:
    return {"plan": plan(), "env": RUNTIME_ENV, "public_env": ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"], **changes}


def error(response: Any) -> dict[str, Any]:
    found: dict[str, Any] = response.get_json()["error"]
    return found


def chain_intact(api: Api) -> int:
    lines = (api.state_dir / "audit.jsonl").read_bytes().splitlines(keepends=True)
    return verify_lines(lines, name="audit.jsonl").records


# -- authentication


@pytest.mark.parametrize(("method", "path"), V1_PATHS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_every_v1_path_needs_the_token(make_api: Callable[..., Api], method: str, path: str, headers: dict) -> None:
    api = make_api(headers=headers)
    response = api.app.test_client().open(path, method=method, headers=headers, json={})
    assert (response.status_code, error(response)["code"]) == (401, "unauthorized")
    assert api.docker.calls == []


def test_healthz_needs_nothing_and_says_nothing_more(make_api: Callable[..., Api]) -> None:
    response = make_api(headers={}).get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"ok": True})


# -- malformed requests


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        (lambda c: c.post("/v1/deploy", data="{}", content_type="text/plain"), 415, "unsupported_media_type"),
        (lambda c: c.post("/v1/deploy", data="{", content_type="application/json"), 400, "bad_request"),
        (lambda c: c.post("/v1/deploy", data="[" * 40 + "]" * 40, content_type="application/json"), 400, "bad_request"),
        (lambda c: c.post("/v1/deploy", data="x" * (300 * 1024), content_type="application/json"), 413, None),
        (lambda c: c.get("/v1/deployments?limit=0"), 400, "bad_request"),
        (lambda c: c.get("/v1/deployments?limit=201"), 400, "bad_request"),
        (lambda c: c.get("/v1/deployments?limit=ten"), 400, "bad_request"),
        (lambda c: c.get("/v1/deployments?env=staging"), 404, "not_found"),
        (lambda c: c.get("/v1/status?env=staging"), 404, "not_found"),
        (lambda c: c.get("/v1/logs/staging"), 404, "not_found"),
        (lambda c: c.get("/v1/logs/dev?tail=0"), 400, "bad_request"),
        (lambda c: c.get("/v1/logs/dev?tail=5001"), 400, "bad_request"),
        (lambda c: c.get("/v1/logs/dev?since=yesterday"), 400, "bad_request"),
        (lambda c: c.get("/v1/logs/dev?since=2026-11-30T10:00:00"), 400, "bad_request"),
        (lambda c: c.get("/v1/logs/dev?since=1960-01-01T00:00:00Z"), 400, "bad_request"),
        (lambda c: c.get("/v1/audit?after=-1"), 400, "bad_request"),
        (lambda c: c.get("/v1/deployments/abc?wait=26"), 400, "bad_request"),
        (lambda c: c.get("/v1/deployments/abc"), 404, "not_found"),
        (lambda c: c.delete("/v1/deploy"), 405, "method_not_allowed"),
    ],
    ids=[
        "not-json-type",
        "broken-json",
        "deep-nesting",
        "over-256-KiB",
        "limit-0",
        "limit-201",
        "limit-word",
        "history-env-not-served",
        "status-env-not-served",
        "logs-env-not-served",
        "tail-0",
        "tail-5001",
        "since-word",
        "since-without-offset",
        "since-before-1970",
        "after-negative",
        "wait-over-25",
        "no-such-deployment",
        "delete",
    ],
)
def test_bad_requests_answer_the_one_error_shape(api: Api, send: Callable[[Any], Any], status: int, code: str) -> None:
    response = send(_Authed(api))
    assert response.status_code == status
    found = error(response)
    assert set(found) == {"code", "message", "details"} and found["message"]
    if code is not None:
        assert found["code"] == code
    assert api.docker.touched() == []


class _Authed:
    """The test client with the token on every request."""

    def __init__(self, api: Api) -> None:
        self.client, self.headers = api.app.test_client(), api.headers

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self.client, method)
        return lambda *args, **kwargs: call(*args, headers=self.headers, **kwargs)


# -- refusals: every finding at once, nothing touched, the refusal audited


REFUSED = [
    pytest.param(body(plan={**plan(), "steps": plan()["steps"][:3]}), "$.steps", id="three-steps"),
    pytest.param(body(plan=plan(tag="latest")), "$.image", id="latest"),
    pytest.param(body(plan={**plan(), "image": "registry.test/other/runtime:1.0.3"}), "$.image", id="other-repo"),
    pytest.param(body(plan=plan(env="prod")), "$.confirm", id="prod-without-confirm"),
    pytest.param(body(plan=plan(env="prod"), confirm="prod:1.0.4"), "$.confirm", id="prod-wrong-confirm"),
    pytest.param(body(env={"runtime_env": "x"}), "$.env.runtime_env", id="lowercase-name"),
    pytest.param(body(env={"RUNTIME_ENV": 1}), "$.env.RUNTIME_ENV", id="value-not-string"),
    pytest.param(body(env={"RUNTIME_ENV": "a\x00b"}), "$.env.RUNTIME_ENV", id="nul-in-value"),
    pytest.param(body(extra=True), "$.extra", id="unknown-key"),
    pytest.param(body(origin={"run_url": "http://github.com/x"}), "$.origin.run_url", id="origin-http"),
    pytest.param(body(origin={"run_url": "https://" + "a" * 300}), "$.origin.run_url", id="origin-url-long"),
    pytest.param(body(origin={"actor": "a" * 101}), "$.origin.actor", id="origin-actor-long"),
    pytest.param(body(origin={"actor": "evil\nactor"}), "$.origin.actor", id="origin-actor-newline"),
    pytest.param(body(origin={"actor": "\x1b[31mred"}), "$.origin.actor", id="origin-actor-escape"),
    pytest.param(body(origin={"repository": "no-slash"}), "$.origin.repository", id="origin-repo"),
    pytest.param(body(origin={"sha": "abc"}), "$.origin.sha", id="origin-short-sha"),
    pytest.param(body(origin={"ref": "r" * 256}), "$.origin.ref", id="origin-ref-long"),
    pytest.param(body(origin={"workflow": ""}), "$.origin.workflow", id="origin-workflow-empty"),
    pytest.param(body(origin={"actor": 7}), "$.origin.actor", id="origin-actor-number"),
    pytest.param(body(origin={"who": "me"}), "$.origin.who", id="origin-unknown-key"),
    pytest.param(body(origin="github"), "$.origin", id="origin-not-object"),
    pytest.param(body(origin=None), "$.origin", id="origin-null"),
    # Found in review: a lone surrogate in a value was taken, then not masked (Docker wrote U+FFFD), and a final
    # newline passed the schema's `$` (Python's matches before it).
    pytest.param(body(env={"RUNTIME_API_TOKEN": "s3cret-value-\ud800"}), "$.env.RUNTIME_API_TOKEN", id="env-surrogate"),
    pytest.param(body(env={"RUNTIME_API_TOKEN": "s3cret-value\n"}), "$.env.RUNTIME_API_TOKEN", id="env-final-newline"),
    pytest.param(body(env={"RUNTIME_API_TOKEN": "a\tb\x1b[2J"}), "$.env.RUNTIME_API_TOKEN", id="env-controls"),
    pytest.param(body(env={"RUNTIME_API_TOKEN": "line\r\nline"}), "$.env.RUNTIME_API_TOKEN", id="env-multi-line"),
    pytest.param(body(origin={"actor": "octocat\n"}), "$.origin.actor", id="origin-actor-final-newline"),
    pytest.param(body(origin={"ref": "refs/heads/main\n"}), "$.origin.ref", id="origin-ref-final-newline"),
    pytest.param(body(origin={"workflow": "deploy\n"}), "$.origin.workflow", id="origin-workflow-final-newline"),
    pytest.param(body(origin={"sha": "a" * 40 + "\n"}), "$.origin.sha", id="origin-sha-final-newline"),
    pytest.param(body(origin={"repository": "acme/trader\n"}), "$.origin.repository", id="origin-repo-final-newline"),
    pytest.param(
        body(origin={"run_url": "https://github.com/acme/trader/actions/runs/1\n"}),
        "$.origin.run_url",
        id="origin-url-final-newline",
    ),
    pytest.param(body(plan={**plan(), "plan": "runtime\n"}), "$.plan", id="plan-name-final-newline"),
    pytest.param(
        body(plan={**plan(), "steps": [{**plan()["steps"][0], "name": "Pull\ud800"}, *plan()["steps"][1:]]}),
        "$.steps[0].name",
        id="step-name-surrogate",
    ),
]


@pytest.mark.parametrize(("sent", "path"), REFUSED)
def test_a_refused_deploy_names_the_field_touches_nothing_and_is_audited(api: Api, sent: dict, path: str) -> None:
    response = api.deploy(sent)

    assert response.status_code == 422, response.get_json()
    found = error(response)
    assert found["code"] == "plan_refused"
    assert path in [d["path"] for d in found["details"]], found["details"]
    assert api.docker.touched() == [] and api.docker.calls == []
    (refused,) = api.audit()
    assert (refused["event"], refused["actor"]) == ("deploy_refused", "token")
    assert any(reason.startswith(path) for reason in refused["reason"]), refused["reason"]


def test_a_refused_env_value_is_named_never_shown(api: Api) -> None:
    response = api.deploy(body(env={**RUNTIME_ENV, "RUNTIME_API_TOKEN": "s3cret-value-canary\n"}))
    (detail,) = error(response)["details"]
    assert detail["message"] == (
        "the value contains a control character (U+000A) at character 20; send it without control characters"
    )
    assert "canary" not in response.get_data(as_text=True) and "canary" not in json.dumps(api.audit())


def test_a_refused_dry_run_is_not_audited(api: Api) -> None:
    assert api.deploy(body(plan=plan(tag="latest"), dry_run=True)).status_code == 422
    assert api.audit() == []


def test_every_finding_is_listed_at_once(api: Api) -> None:
    sent = body(plan={**plan(tag="latest"), "extra": 1}, env={"bad name": "x"}, origin={"sha": "1"})
    paths = {d["path"] for d in error(api.deploy(sent))["details"]}
    assert {"$.extra", "$.env.bad name", "$.origin.sha"} <= paths


@pytest.mark.parametrize(
    "sent",
    [
        body(env={"\ud800": "x"}),
        body(env={"RUNTIME_ENV": "\ud800"}, plan={**plan(), "plan": "run\udfff"}),
        body(plan={**plan(), "environment": "d\ud800v"}),
        body(origin={"actor": "\udcff"}),
        body(origin={"run_url": "https://github.com/\ud800"}),
        body(extra={"\ud801": 1}),
    ],
    ids=["env-name", "plan-name", "environment", "origin-actor", "origin-run-url", "unknown-key"],
)
def test_a_lone_surrogate_is_refused_and_audited_never_a_500(api: Api, sent: dict) -> None:
    """Found in review: a lone surrogate in an env name or the plan gave a 500 and no audit record."""
    response = api.deploy(sent)
    assert response.status_code == 422, response.get_data(as_text=True)
    (refused,) = api.audit()
    assert refused["event"] == "deploy_refused"
    assert chain_intact(api) == 1


def test_a_refusal_records_a_bounded_account_whatever_the_body_holds(api: Api) -> None:
    """Found in review: refusals copied unbounded env names into the audit log (250 MB in 7 s)."""
    sent = body(env={f"{'N' * 2000}{i}": "x" for i in range(100)} | {f"bad-{'x' * 9000}": "y"})
    assert len(json.dumps(sent)) > 200_000
    response = api.deploy(sent)
    assert response.status_code == 422
    assert len(error(response)["details"]) >= 100  # the caller hears everything
    size = (api.state_dir / "audit.jsonl").stat().st_size
    assert size < 12 * 1024, size  # the log keeps the first 20 findings, each cut short
    (refused,) = api.audit()
    assert refused["findings"] >= 100 and len(refused["reason"]) == 20


def test_a_good_origin_is_accepted_in_a_dry_run(api: Api) -> None:
    origin = {
        "run_url": "https://github.com/acme/trader/actions/runs/1/attempts/2",
        "actor": "octocat",
        "repository": "acme/trader",
        "sha": "a" * 40,
        "ref": "refs/heads/main",
        "workflow": "Deploy",
    }
    assert api.deploy(body(origin=origin, dry_run=True)).status_code == 200


# -- the dry run: the one step table, everything the server owns, what runs now


def test_a_dry_run_shows_the_server_side_and_the_change(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2"))
    api = make_api(docker=docker)

    response = api.deploy(body(dry_run=True))

    answer = response.get_json()
    assert response.status_code == 200, answer
    assert (answer["container"], answer["volumes"], answer["restart_policy"]) == (
        "runtime-dev",
        [DEV_VOLUME],
        "unless-stopped",
    )
    assert answer["runtime_logs"] == "json-file logs (max-size=50m, max-file=5)"
    assert answer["env"] == sorted(RUNTIME_ENV)
    assert [a["step"] for a in answer["actions"]] == ["pull", "stop_remove", "start", "verify"]
    assert "stop runtime-dev (running, registry.test/acme/trader/runtime:1.0.2" in answer["actions"][1]["description"]
    assert "json-file logs (max-size=50m, max-file=5)" in answer["actions"][2]["description"]
    assert answer["current"]["state"] == "running"
    assert docker.touched() == [] and api.audit() == []
    assert RUNTIME_ENV["RUNTIME_API_TOKEN"] not in response.get_data(as_text=True)


def test_a_dry_run_with_docker_gone_is_503(make_api: Callable[..., Api]) -> None:
    response = make_api(docker=FakeDocker(reachable=False)).deploy(body(dry_run=True))
    assert (response.status_code, error(response)["code"]) == (503, "docker_unavailable")


# -- status


def test_status_comes_from_docker_now(make_api: Callable[..., Api]) -> None:
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", "registry.test/acme/trader/runtime:1.0.2", restart_count=2))
    status = make_api(docker=docker).get("/v1/status").get_json()
    assert status["agent"]["docker"] == "reachable" and status["agent"]["audit"] == "ok"
    dev, prod = status["environments"]["dev"], status["environments"]["prod"]
    assert (dev["state"], dev["restart_count"], dev["digest"]) == ("running", 2, "sha256:" + "d" * 64)
    assert (prod["state"], prod["image"], prod["last_deployment"]) == ("absent", None, None)


def test_status_with_docker_gone_says_unknown(make_api: Callable[..., Api]) -> None:
    status = make_api(docker=FakeDocker(reachable=False)).get("/v1/status?env=dev").get_json()
    assert status["agent"]["docker"] == "unreachable"
    assert list(status["environments"]) == ["dev"] and status["environments"]["dev"]["state"] == "unknown"


# -- the audit log: pages bounded in records and bytes


def test_audit_pages_are_bounded_in_bytes(api: Api) -> None:
    """Found in review: one read of /v1/audit took 840 MB when the log held large records."""
    log = AuditLog(api.state_dir / "audit.jsonl")
    for _ in range(30):
        log.append("note", deployment_id=None, actor="test", text="x" * 100_000)
    first = api.get("/v1/audit").get_json()
    assert first["more"] is True and 5 <= len(first["records"]) <= 11
    seen = [r["seq"] for r in first["records"]]
    after = seen[-1]
    while True:
        page = api.get(f"/v1/audit?after={after}").get_json()
        seen += [r["seq"] for r in page["records"]]
        if not page["more"]:
            break
        after = page["records"][-1]["seq"]
    assert seen == list(range(1, 31))


# -- long polling a deployment


def _running_deployment(api: Api) -> AuditLog:
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "d1", "dev", "1.0.0", None)
    return log


def test_a_wait_answers_the_moment_the_deployment_changes(api: Api) -> None:
    log = _running_deployment(api)
    lock = try_lock(api.state_dir / "deploy.lock")  # a live worker runs it
    assert lock is not None
    try:
        timer = threading.Timer(0.3, lambda: log.append("step_started", deployment_id="d1", actor="t", step="pull"))
        timer.start()
        started = time.monotonic()
        found = api.get("/v1/deployments/d1?wait=10&after=1").get_json()
        waited = time.monotonic() - started
        timer.join()
    finally:
        lock.release()
    assert found["steps"][0]["state"] == "running" and found["audit_head"]["seq"] == 2
    assert 0.25 < waited < 2, waited  # woke on the record (written by "another worker"), not at the end of the wait


def test_a_wait_without_change_ends_with_the_wait(api: Api) -> None:
    _running_deployment(api)
    lock = try_lock(api.state_dir / "deploy.lock")
    assert lock is not None
    try:
        started = time.monotonic()
        found = api.get("/v1/deployments/d1?wait=1").get_json()
        waited = time.monotonic() - started
    finally:
        lock.release()
    assert found["state"] == "running" and 0.9 < waited < 3


@pytest.mark.parametrize(("threads", "slots"), [(16, 8), (4, 2), (3, 1), (1, 0), (0, 0)])
def test_long_polls_may_hold_half_of_a_workers_threads(threads: int, slots: int) -> None:
    polls = LongPolls(threads)
    with ExitStack() as held:
        granted = [held.enter_context(polls.slot()) for _ in range(threads + 2)]
        assert granted == [True] * slots + [False] * (threads + 2 - slots) and polls.waiting == slots
    assert polls.waiting == 0  # every slot is given back


def test_gunicorn_sizes_the_long_poll_slots_from_the_workers_threads(api: Api) -> None:
    worker = SimpleNamespace(wsgi=api.app, cfg=SimpleNamespace(threads=6))  # what post_worker_init is given
    gunicorn_conf.post_worker_init(worker)
    assert api.app.extensions["deployplan"].reads.long_polls.slots == 3


def test_a_long_poll_beyond_half_of_the_threads_answers_at_once(api: Api) -> None:
    """Found in review: 31 long polls filled a worker's 16 threads and /healthz stopped answering."""
    _running_deployment(api)
    lock = try_lock(api.state_dir / "deploy.lock")
    assert lock is not None
    polls = api.app.extensions["deployplan"].reads.long_polls
    try:
        with ExitStack() as held:
            assert all(held.enter_context(polls.slot()) for _ in range(polls.slots))  # other readers wait
            started = time.monotonic()
            found = api.get("/v1/deployments/d1?wait=20").get_json()
            answered_in = time.monotonic() - started
    finally:
        lock.release()
    assert found["state"] == "running" and answered_in < 10, answered_in  # not the 20 s of the wait


def test_a_dead_workers_deployment_is_marked_interrupted_and_answers_a_wait_at_once(api: Api) -> None:
    _running_deployment(api)  # no lock held: its worker is gone
    started = time.monotonic()
    found = api.get("/v1/deployments/d1?wait=10&after=1").get_json()
    assert found["state"] == "interrupted" and found["audit_head"]["seq"] == 2
    assert time.monotonic() - started < 2


def test_a_read_answers_when_the_log_cannot_record_an_interrupted_deployment(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: with a deployment left running and the log unwritable (a full disk), every read was a 500."""
    _running_deployment(api)
    ledger = api.app.extensions["deployplan"].ledger

    def full(*args: Any, **kwargs: Any) -> None:
        raise AuditError("cannot write the audit log: No space left on device")

    monkeypatch.setattr(ledger.audit, "append", full)  # a full disk, which the unit tier cannot make
    assert api.get("/v1/status").status_code == 200
    assert api.get("/v1/deployments/d1").get_json()["state"] == "running"
