"""The read-only page through the test client: every page and state, hostile values as text, the headers."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from agent.auditlog import AuditLog
from conftest import Api, record_deployment
from fakedocker import FakeContainer, FakeDocker
from runner import __version__
from runner.core.text import printable, visible

R = "registry.test/acme/trader/runtime"
HOSTILE = "<script>alert(1)</script></textarea>\"'><img src=x onerror=alert(2)>"
PAGES = [
    "/",
    "/deployments/ok1",
    "/deployments/bad1",
    "/deployments/int1",
    "/environments/dev/logs",
    "/environments/prod/logs",
]


@pytest.fixture
def page(make_api: Callable[..., Api]) -> Api:
    docker = FakeDocker()
    docker.add(
        FakeContainer(
            "runtime-dev",
            f"{R}:1.0.1",
            env={"RUNTIME_API_TOKEN": "s3cret-api-token-value"},
            output=[
                ("2026-11-30T10:00:01Z", "stdout", f"hello {HOSTILE}"),
                ("2026-11-30T10:00:02Z", "stderr", "token s3cret-api-token-value refused"),
            ],
        )
    )
    api = make_api(docker=docker)
    log = AuditLog(api.state_dir / "audit.jsonl")
    origin = {"run_url": "https://github.com/acme/trader/actions/runs/42/attempts/1", "actor": "octo<b>cat</b>"}
    record_deployment(log, "ok1", "dev", "1.0.0", "succeeded", origin=origin)
    record_deployment(
        log, "bad1", "dev", "1.0.1", None, origin={"run_url": "https://evil.example/run", "actor": HOSTILE}
    )
    steps = [("pull", "ok"), ("stop_remove", "ok")]
    for step, message in steps:
        log.append("step_started", deployment_id="bad1", actor="token", step=step, actions=[])
        log.append("step_succeeded", deployment_id="bad1", actor="token", step=step, message=message)
    log.append("step_started", deployment_id="bad1", actor="token", step="start", actions=[])
    log.append("step_failed", deployment_id="bad1", actor="token", step="start", message=f"boom {HOSTILE}")
    log.append(
        "deployment_finished",
        deployment_id="bad1",
        actor="token",
        state="failed",
        error={"step": "start", "message": f"boom {HOSTILE}"},
        logs=[f"runtime: {HOSTILE}", "runtime: refusing to start"],
    )
    record_deployment(log, "int1", "prod", "1.0.0", None)
    log.append("deployment_interrupted", deployment_id="int1", actor="deploy-agent", message="the agent stopped")
    return api


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_html_with_the_security_headers_and_no_script(page: Api, path: str) -> None:
    response = page.get(path)
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'self'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert (
        "<script" not in text and "<img" not in text and "onerror=alert" not in text.replace("onerror=alert(2)&gt;", "")
    )
    assert " style=" not in text  # the CSP allows no inline style
    assert not re.search(r"""(src|href)="(https?:)?//""", text.replace('href="https://github.com/', ""))
    assert "s3cret-api-token-value" not in text


def test_the_index_shows_each_environment_and_the_newest_deployments(page: Api) -> None:
    text = page.get("/").get_data(as_text=True)
    assert '<h2>dev <span class="badge running">running</span></h2>' in text
    assert '<h2>prod <span class="badge absent">absent</span></h2>' in text
    table = text.split("Newest deployments")[1]
    assert table.index("int1") < table.index("bad1") < table.index("ok1")  # newest first
    assert (
        '<a href="https://github.com/acme/trader/actions/runs/42/attempts/1" rel="noreferrer noopener">run</a>' in text
    )
    assert "octo&lt;b&gt;cat&lt;/b&gt;" in text
    assert '<span class="muted">https://evil.example/run</span>' in text  # not GitHub: text, never a link
    assert 'href="https://evil.example' not in text
    assert "start: <span" in text  # the failed step is named
    assert " ago)" in text and "UTC" in text


def test_a_failed_deployment_shows_the_timeline_the_error_and_the_escaped_log_tail(page: Api) -> None:
    text = page.get("/deployments/bad1").get_data(as_text=True)
    assert "Failed in start" in text
    assert "boom &lt;script&gt;alert(1)&lt;/script&gt;&lt;/textarea&gt;&#34;&#39;&gt;" in text
    assert "runtime: &lt;script&gt;" in text and "runtime: refusing to start" in text
    assert text.count('<svg class="bar"') == 4
    assert '<rect class="fill skipped"' in text and '<rect class="fill failed"' in text
    assert re.search(r'<rect class="fill succeeded" x="[0-9.]+" y="0" width="[0-9.]+" height="4">', text)


def test_an_interrupted_deployment_says_so(page: Api) -> None:
    text = page.get("/deployments/int1").get_data(as_text=True)
    assert '<span class="badge interrupted">interrupted</span>' in text and "the agent stopped" in text


def test_the_log_page_is_masked_escaped_and_marks_stderr(page: Api) -> None:
    text = page.get("/environments/dev/logs").get_data(as_text=True)
    assert "hello &lt;script&gt;" in text
    assert '<span class="stderr">10:00:02 ! token **** refused</span>' in text


def test_no_container_is_said_plainly(page: Api) -> None:
    assert "No container" in page.get("/environments/prod/logs").get_data(as_text=True)


def test_a_broken_audit_log_is_shown_at_the_top(make_api: Callable[..., Api], tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "broken"
    state.mkdir(mode=0o700)
    (state / "audit.jsonl").write_text('{"not": "a record"}\n')
    text = make_api(DEPLOY_AGENT_STATE_DIR=str(state)).get("/").get_data(as_text=True)
    assert "The audit log is broken" in text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/deployments/nope", 404),
        ("GET", "/environments/staging/logs", 404),
        ("POST", "/", 405),
        ("DELETE", "/deployments/ok1", 405),
    ],
)
def test_errors_are_pages_never_tracebacks(page: Api, method: str, path: str, status: int) -> None:
    response = page.app.test_client().open(path, method=method, headers=page.headers)
    text = response.get_data(as_text=True)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"<h1>{status} " in text and "Traceback" not in text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    if status == 405:
        assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", [*PAGES, "/static/page.css"])
def test_every_page_needs_authentication(make_api: Callable[..., Api], path: str) -> None:
    response = make_api(headers={}).get(path)
    assert response.status_code == 401
    body = response.get_data(as_text=True)
    assert "<h1>401 unauthorized</h1>" in body
    assert __version__ not in body  # a stranger learns nothing of the agent, not even its version


def test_the_stylesheet_is_served_by_the_agent(page: Api) -> None:
    response = page.get("/static/page.css")
    text = response.get_data(as_text=True)
    response.close()  # a file answer holds the file until closed
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/css")
    assert "@media (min-width: 600px)" in text


def test_the_page_changes_nothing(page: Api) -> None:
    before = page.audit()
    for path in PAGES:
        page.get(path)
    assert page.audit() == before and page.docker.touched() == []


def test_the_page_with_docker_gone(make_api: Callable[..., Api]) -> None:
    text = make_api(docker=FakeDocker(reachable=False)).get("/").get_data(as_text=True)
    assert "Docker does not answer" in text and '<span class="badge unknown">unknown</span>' in text


FORMAT_CHARACTERS = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0x200B, 0x2010))]


@pytest.mark.parametrize("char", FORMAT_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in FORMAT_CHARACTERS])
def test_bidi_and_invisible_characters_are_shown_escaped_on_the_page(make_api: Callable[..., Api], char: str) -> None:
    """Found in review: a U+202E in origin.actor reversed the "via <real actor>" beside it."""
    docker = FakeDocker()
    docker.add(
        FakeContainer("runtime-dev", f"{R}:1.0.0", output=[("2026-11-30T10:00:01Z", "stdout", f"log{char}line")])
    )
    api = make_api(docker=docker)
    log = AuditLog(api.state_dir / "audit.jsonl")
    record_deployment(log, "d1", "dev", "1.0.0", "failed", origin={"actor": f"mallory{char}yrogam"})

    escaped = f"\\u{ord(char):04x}"
    for path in ("/", "/deployments/d1", "/environments/dev/logs"):
        text = api.get(path).get_data(as_text=True)
        assert char not in text, path
    assert f"mallory{escaped}yrogam" in api.get("/").get_data(as_text=True)
    assert f"log{escaped}line" in api.get("/environments/dev/logs").get_data(as_text=True)


def test_the_page_and_the_cli_escape_with_one_function() -> None:
    assert visible("a\u202eb\u200bc") == "a\\u202eb\\u200bc" == printable("a\u202eb\u200bc")
    assert visible("plain, tab\tand é") == "plain, tab\tand é"
