"""Day-2 reads through the test client: history, the runtime's logs (masked, bounded), one deployment."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest

from agent.auditlog import AuditLog
from conftest import Api, record_deployment
from fakedocker import FakeContainer, FakeDocker

SECRET = "s3cret-api-token-value"
PEM = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n-----END KEY-----"
ORIGIN = {"run_url": "https://github.com/acme/trader/actions/runs/7/attempts/1", "actor": "octocat"}


@pytest.fixture
def history(api: Api) -> Api:
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "a1", "dev", "1.0.0", "succeeded")
    record_deployment(log, "a2", "prod", "1.0.0", "succeeded")
    record_deployment(log, "a3", "dev", "1.0.1", "failed", origin=ORIGIN)
    record_deployment(log, "a4", "dev", "1.0.2", "succeeded")
    return api


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", ["a4", "a3", "a2", "a1"]),
        ("?env=dev", ["a4", "a3", "a1"]),
        ("?env=prod", ["a2"]),
        ("?limit=2", ["a4", "a3"]),
        ("?env=dev&limit=1", ["a4"]),
        ("?limit=200", ["a4", "a3", "a2", "a1"]),
    ],
)
def test_history_is_newest_first(history: Api, query: str, ids: list[str]) -> None:
    found = history.get(f"/v1/deployments{query}").get_json()["deployments"]
    assert [d["id"] for d in found] == ids
    assert all("logs" not in d for d in found)


def test_history_carries_the_origin_and_the_failed_step(history: Api) -> None:
    failed = next(d for d in history.get("/v1/deployments").get_json()["deployments"] if d["id"] == "a3")
    # A record written without `verified` is the caller's claim.
    assert failed["origin"] == {**ORIGIN, "verified": False} and failed["actor"] == "token"
    assert failed["error"] == {"step": "verify", "message": "exited with code 1"}
    assert failed["audit_head"]["seq"] == 6


def test_one_deployment_carries_its_logs_origin_and_audit_head(history: Api) -> None:
    found = history.get("/v1/deployments/a3").get_json()
    assert found["logs"] == ["x"] and found["origin"] == {**ORIGIN, "verified": False}
    assert found["audit_head"] == {"seq": 6, "hash": history.audit()[5]["hash"]}


# -- runtime logs


def runtime(output: list[tuple[str, str, str]], *, ours: bool = True, state: str = "running") -> FakeDocker:
    docker = FakeDocker()
    docker.add(
        FakeContainer(
            "runtime-dev",
            "registry.test/acme/trader/runtime:1.0.0",
            state=state,
            env={"RUNTIME_API_TOKEN": SECRET, "RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_KEY": PEM},
            labels={"deployplan.deployment-id": "d1"} if ours else {},
            output=output,
        )
    )
    return docker


def t(second: int, fraction: str = "") -> str:
    return f"2026-11-30T10:00:{second:02d}{'.' + fraction if fraction else ''}Z"


@pytest.fixture
def logs_api(make_api: Callable[..., Api]) -> Callable[..., Api]:
    def make(docker: FakeDocker) -> Api:
        api = make_api(docker=docker)
        record_deployment(AuditLog(api.state_dir / "audit.jsonl"), "d1", "dev", "1.0.0", "succeeded")
        return api

    return make


def test_logs_are_in_order_with_stderr_marked_and_secrets_masked(logs_api: Callable[..., Api]) -> None:
    output = [
        (t(1), "stdout", "runtime: starting, log_level=info env=dev"),
        (t(2, "5"), "stderr", f"warning: token {SECRET} is about to expire"),
        (t(2, "523456789"), "stdout", "-----BEGIN KEY-----"),  # after 02.5: Docker trims trailing zeros
        (t(3), "stdout", "MIIEvQIBADANBgkqhkiG9w0BAQEF"),
        (t(4), "stdout", "ready"),
    ]
    answer = logs_api(runtime(output)).get("/v1/logs/dev").get_json()

    assert (answer["environment"], answer["container"], answer["state"]) == ("dev", "runtime-dev", "running")
    assert [(line["stream"], line["text"]) for line in answer["lines"]] == [
        ("stdout", "runtime: starting, log_level=info env=dev"),
        ("stderr", "warning: token **** is about to expire"),
        ("stdout", "****"),  # a line of a multi-line secret
        ("stdout", "****"),
        ("stdout", "ready"),
    ]
    assert answer["lines"][0]["time"] == t(1) and answer["truncated"] is False


def test_a_container_the_log_does_not_know_has_every_value_masked(logs_api: Callable[..., Api]) -> None:
    output = [(t(1), "stdout", "log_level=info token=" + SECRET)]
    answer = logs_api(runtime(output, ours=False)).get("/v1/logs/dev").get_json()
    assert [line["text"] for line in answer["lines"]] == ["log_level=**** token=****"]


def test_tail_keeps_the_newest_lines(logs_api: Callable[..., Api]) -> None:
    output = [(t(i), "stdout" if i % 2 else "stderr", f"line {i}") for i in range(1, 30)]
    answer = logs_api(runtime(output)).get("/v1/logs/dev?tail=3").get_json()
    assert [line["text"] for line in answer["lines"]] == ["line 27", "line 28", "line 29"]


def test_a_10_mb_line_is_cut_and_the_answer_bounded(logs_api: Callable[..., Api]) -> None:
    """A runtime that writes a 10 MB line must not hurt the agent: the line is cut, the answer stays under 1 MiB."""
    output = [(t(1), "stdout", "x" * (10 * 1024 * 1024)), (t(2), "stdout", f"after {SECRET}")]
    response = logs_api(runtime(output)).get("/v1/logs/dev?tail=5000")
    answer = response.get_json()
    assert len(response.get_data()) < 1100 * 1024
    assert answer["truncated"] is True
    first, last = answer["lines"][0]["text"], answer["lines"][-1]["text"]
    assert first.startswith("x" * 1000) and first.endswith("lines are kept to 16384 bytes]")
    assert last == "after ****"


def test_control_characters_stay_text_in_json(logs_api: Callable[..., Api]) -> None:
    output = [(t(1), "stdout", "\x1b]0;pwned\x07\x1b[2J<script>alert(1)</script>")]
    answer = logs_api(runtime(output)).get("/v1/logs/dev").get_json()
    assert answer["lines"][0]["text"] == "\x1b]0;pwned\x07\x1b[2J<script>alert(1)</script>"


def test_no_container_is_absent_with_no_lines(api: Api) -> None:
    answer = api.get("/v1/logs/prod").get_json()
    assert (answer["state"], answer["lines"], answer["truncated"]) == ("absent", [], False)


def test_logs_with_docker_gone_are_503(make_api: Callable[..., Api]) -> None:
    response = make_api(docker=FakeDocker(reachable=False)).get("/v1/logs/dev")
    assert (response.status_code, response.get_json()["error"]["code"]) == (503, "docker_unavailable")


@pytest.mark.parametrize("since", ["600", "2026-11-30T10:00:00Z", "2026-11-30T11:00:00+01:00"])
def test_since_reaches_docker_as_a_unix_time(logs_api: Callable[..., Api], since: str) -> None:
    api = logs_api(runtime([(t(1), "stdout", "hello")]))
    assert api.get(f"/v1/logs/dev?since={quote(since)}").status_code == 200
    sent = [kwargs["since"] for name, _, kwargs in api.docker.calls if name == "logs"]
    assert len(sent) == 2 and all(isinstance(s, float) for s in sent)
    if "T" in since:
        assert sent[0] == 1796032800.0
