"""The read-only page in a real browser: headless Chromium behind a loopback stand-in for Cloudflare Access, in front
of the real agent (cloudflare-access mode, under gunicorn) after real deploys, one that succeeded and one that
failed in verify with hostile values in its origin.

With DEPLOYPLAN_SCREENSHOTS set to a directory, the two screenshots of the failed deployment are copied there as
page-phone.png and page-desktop.png (the project keeps them under docs/)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from browser import AccessProxy, Chromium, Forwarded, read_png

import lab
from accesskeys import HEADER, TEAM, Issuer, Jwks, Key
from realparts import CANARY, PREFIX, Cli, Images, agent_env, plan_data

PERSON = "ops@example.com"
DEPLOYER = f"{secrets.token_hex(16)}.access"  # the service token of the deploy workflow
# The failed deployment (the one in the screenshots) was started by an ordinary person; the succeeded one carries
# markup and a script in its origin's actor, which every page must show as text.
PERSON_ACTOR = "octocat"
HOSTILE_ACTOR = "<b>x</b><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
OK_RUN = "https://github.com/acme/trader/actions/runs/1/attempts/1"
FAILED_RUN = "https://github.com/acme/trader/actions/runs/2/attempts/1"
STEP_NAMES = (
    "Pull the runtime image",
    "Stop and remove the current runtime",
    "Start the new runtime",
    "Verify the runtime stays up",
)
# What the example runtime says when RUNTIME_LOG_LEVEL is missing, before it exits 78.
REFUSAL = ("runtime: RUNTIME_LOG_LEVEL is not set", "runtime: refusing to start: missing RUNTIME_LOG_LEVEL")
SIZES = {"phone": (390, 844), "desktop": (1280, 900)}


@dataclass
class Page:
    """The agent, the proxy a person's browser goes through, the browser, and the two deployments."""

    agent_url: str
    proxy: AccessProxy
    chromium: Chromium
    issuer: Issuer
    key: Key
    ok: dict[str, Any]
    failed: dict[str, Any]
    workdir: Path
    log_path: Path
    http: requests.Session


@pytest.fixture(scope="module")
def page(
    cli: Cli, images: Images, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    tmp = tmp_path_factory.mktemp("page-browser")
    name = f"{PREFIX}-page-{secrets.token_hex(3)}"
    key, aud = Key.new(), secrets.token_hex(32)
    issuer = Issuer(aud=aud)
    with contextlib.ExitStack() as cleanup:
        jwks = Jwks()
        cleanup.callback(jwks.close)
        jwks.serve(key)
        containers = {"dev": f"{name}-dev", "prod": f"{name}-prod"}
        env = agent_env(
            images, state_dir=tmp / "state", containers=containers, token=secrets.token_hex(24), volumes="none"
        )
        env |= {
            "DEPLOY_AGENT_AUTH": "cloudflare-access",
            "DEPLOY_AGENT_ACCESS_TEAM_DOMAIN": TEAM,
            "DEPLOY_AGENT_ACCESS_AUD": aud,
            "DEPLOY_AGENT_ACCESS_CERTS_URL": jwks.url,
            "DEPLOY_AGENT_DEPLOYERS_DEV": DEPLOYER,
            "DEPLOY_AGENT_DEPLOYERS_PROD": DEPLOYER,
        }
        server = lab.AgentServer(env, log_path=tmp / "agent.log", command=[str(cli.bin_dir / "deploy-agent")])
        # Run in reverse: the agent stops, then its containers go, then the JWKS.
        cleanup.callback(lab.remove_containers, docker_client, name)
        cleanup.callback(server.stop)
        server.start()
        http = cleanup.enter_context(requests.Session())

        def deploy(body: dict[str, Any]) -> dict[str, Any]:
            deployer = {HEADER: issuer.sign(key, issuer.claims(common_name=DEPLOYER))}
            response = http.post(f"{server.url}/v1/deploy", json=body, headers=deployer, timeout=30)
            assert response.status_code == 202, response.text
            path = f"{server.url}/v1/deployments/{response.json()['deployment_id']}"
            deadline = time.monotonic() + 60
            while True:
                deployer = {HEADER: issuer.sign(key, issuer.claims(common_name=DEPLOYER))}
                found: dict[str, Any] = http.get(path, headers=deployer, timeout=30).json()
                if found.get("state") != "running":
                    return found
                assert time.monotonic() < deadline, f"the deployment still runs after 60 s: {found}"
                time.sleep(0.2)

        ok = deploy(
            {
                "plan": plan_data(images, "1.0.0", env="prod"),
                "env": {"RUNTIME_ENV": "prod", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": CANARY},
                "public_env": ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"],
                "confirm": "prod:1.0.0",
                "origin": _origin(OK_RUN, HOSTILE_ACTOR),
            }
        )
        failed = deploy(
            {
                "plan": plan_data(images, "1.0.1", verify_timeout=20),
                "env": {"RUNTIME_ENV": "dev", "RUNTIME_API_TOKEN": CANARY},  # no RUNTIME_LOG_LEVEL: it exits 78
                "public_env": ["RUNTIME_ENV"],
                "origin": _origin(FAILED_RUN, PERSON_ACTOR),
            }
        )
        proxy = cleanup.enter_context(AccessProxy(server.url, lambda: issuer.sign(key, issuer.user_claims(PERSON))))
        yield Page(
            agent_url=server.url,
            proxy=proxy,
            chromium=Chromium(tmp / "chromium"),
            issuer=issuer,
            key=key,
            ok=ok,
            failed=failed,
            workdir=tmp,
            log_path=server.log_path,
            http=http,
        )


def _origin(run_url: str, actor: str) -> dict[str, str]:
    return {
        "run_url": run_url,
        "actor": actor,
        "repository": "acme/trader",
        "sha": secrets.token_hex(20),
        "ref": "refs/heads/main",
        "workflow": "deploy",
    }


class Dom(HTMLParser):
    """The elements of a serialized DOM, its title, and its text (character references resolved)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self._in_title = False
        self.title = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._in_title:
            self.title += data

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}

    def links(self) -> list[str]:
        return [attrs["href"] or "" for tag, attrs in self.elements if tag == "a" and "href" in attrs]


def browse(page: Page, path: str, label: str) -> Dom:
    """Open `path` in Chromium through Access; the browser loaded the page and its stylesheet, and nothing else
    (an <img src=x> that came to life would ask for /x). The DOM is kept in the module's tmp dir, for the canary
    sweep."""
    before = len(page.proxy.forwarded)
    html = page.chromium.dump_dom(page.proxy.url + path)
    (page.workdir / f"dom-{label}.html").write_text(html, encoding="utf-8")
    asked = page.proxy.forwarded[before:]
    assert Forwarded("GET", path, 200) in asked, asked
    assert Forwarded("GET", "/static/page.css", 200) in asked, asked
    assert {f.path for f in asked} <= {path, "/static/page.css", "/favicon.ico"}, asked
    dom = Dom(html)
    assert "pwned" not in dom.title
    assert dom.title.startswith("deployplan")
    # The hostile values are text: no element came from them (and the page has no script of its own).
    assert not dom.tags() & {"script", "img", "b", "iframe", "object", "embed"}, dom.tags()
    assert not any(name.startswith("on") for _, attrs in dom.elements for name in attrs)
    assert CANARY not in html
    return dom


def test_the_deploys_ended_as_meant(page: Page) -> None:
    assert page.ok["state"] == "succeeded", page.ok
    assert page.failed["state"] == "failed", page.failed
    assert page.failed["error"]["step"] == "verify", page.failed
    assert "78" in page.failed["error"]["message"]


@pytest.mark.parametrize("path", ["/", "/deployments/{failed}", "/environments/dev/logs", "/static/page.css"])
def test_without_access_the_page_answers_401(page: Page, path: str) -> None:
    response = page.http.get(page.agent_url + path.format(failed=page.failed["id"]), timeout=30)
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>401 unauthorized</h1>" in response.text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    # A header that is not Access's signature does not open it either.
    forged = {HEADER: page.issuer.sign(Key.new(), page.issuer.user_claims(PERSON))}
    assert page.http.get(page.agent_url + path.format(failed=page.failed["id"]), headers=forged).status_code == 401


def test_the_proxy_passes_the_agents_answers_through_unchanged(page: Page) -> None:
    direct = page.http.get(
        page.agent_url + "/static/page.css",
        headers={HEADER: page.issuer.sign(page.key, page.issuer.user_claims(PERSON))},
        timeout=30,
    )
    proxied = page.http.get(page.proxy.url + "/static/page.css", timeout=30)
    head = page.http.head(page.proxy.url + "/static/page.css", timeout=30)
    missing = page.http.get(page.proxy.url + "/deployments/nope", timeout=30)

    def end_to_end(response: requests.Response) -> dict[str, str]:
        return {k.lower(): v for k, v in response.headers.items() if k.lower() not in ("date", "connection")}

    assert (proxied.status_code, proxied.content) == (200, direct.content)
    assert end_to_end(proxied) == end_to_end(direct)
    assert (head.status_code, head.content, end_to_end(head)) == (200, b"", end_to_end(direct))
    assert missing.status_code == 404 and "<h1>404 not_found</h1>" in missing.text, missing.text
    for response in (proxied, head, missing):
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'self'")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    # The person's header, never the client's: one sent to the proxy is replaced.
    assert page.http.get(page.proxy.url + "/", headers={HEADER: "forged"}, timeout=30).status_code == 200


def test_the_proxy_closes_cleanly(page: Page) -> None:
    proxy = AccessProxy(page.agent_url, lambda: page.issuer.sign(page.key, page.issuer.user_claims(PERSON)))
    with proxy:
        assert page.http.get(proxy.url + "/", timeout=30).status_code == 200
    assert not [t for t in threading.enumerate() if t.name == proxy.thread_name]
    with pytest.raises(requests.ConnectionError):
        page.http.get(proxy.url + "/", timeout=5)
    proxy.close()  # twice is fine


def test_the_index_shows_the_environments_and_the_deployments(page: Page) -> None:
    dom = browse(page, "/", "index")
    text = dom.text
    assert "Environments" in text and "Newest deployments" in text
    headings = [t.strip() for t in dom.texts if t.strip() in ("dev", "prod")]
    assert {"dev", "prod"} <= set(headings)
    assert page.ok["image"] in text and page.failed["image"] in text
    assert page.ok["digest"] in text
    table = text.split("Newest deployments", 1)[1]
    assert table.index("1.0.1") < table.index("1.0.0")  # newest first
    assert PERSON_ACTOR in table and HOSTILE_ACTOR in table and f"via {DEPLOYER}" in table
    assert f"verify: {page.failed['error']['message']}" in table  # the failed step, named
    assert OK_RUN in dom.links() and FAILED_RUN in dom.links()
    assert f"/deployments/{page.failed['id']}" in dom.links()
    assert "/environments/dev/logs" in dom.links()


def test_the_failed_deployment_shows_its_steps_the_error_and_the_runtimes_words(page: Page) -> None:
    dom = browse(page, f"/deployments/{page.failed['id']}", "failed")
    text = dom.text
    assert dom.title == "deployplan: dev 1.0.1 failed"
    assert "Failed in verify" in text
    assert page.failed["error"]["message"] in text
    for name in STEP_NAMES:
        assert name in text
    for number, action in enumerate(("pull", "stop_remove", "start", "verify"), start=1):
        assert f"{number}. {action}" in text
    assert f"{PERSON_ACTOR} claimed via {DEPLOYER}" in text  # the origin is the caller's claim here
    for line in REFUSAL:
        assert line in text
    assert sum(1 for tag, _ in dom.elements if tag == "svg") == 4  # a bar per step


def test_the_succeeded_deployment_links_its_run(page: Page) -> None:
    dom = browse(page, f"/deployments/{page.ok['id']}", "ok")
    assert dom.title == "deployplan: prod 1.0.0 succeeded"
    assert OK_RUN in dom.links() and HOSTILE_ACTOR in dom.text
    assert "Failed in" not in dom.text


def test_the_runtime_log_page_shows_why_it_stopped(page: Page) -> None:
    dom = browse(page, "/environments/dev/logs", "dev-logs")
    text = dom.text
    assert dom.title == "deployplan: dev log"
    assert "newest last" in text
    assert "runtime: starting" in text
    for line in REFUSAL:
        assert line in text
    # In order within a stream; across stdout and stderr the order is Docker's timestamps, which its two copiers
    # take apart from each other (a stderr line written after a stdout line may carry the earlier time).
    assert text.index("runtime: starting") < text.index("runtime: reading configuration")
    assert text.index(REFUSAL[0]) < text.index(REFUSAL[1])
    assert "! " + REFUSAL[1] in text  # stderr is marked


@pytest.mark.parametrize("size", SIZES)
def test_the_failed_deployment_on_a_screen(page: Page, size: str) -> None:
    width, height = SIZES[size]
    before = len(page.proxy.forwarded)
    shot = page.chromium.screenshot(
        f"{page.proxy.url}/deployments/{page.failed['id']}", width, height, page.workdir / f"page-{size}.png"
    )
    assert Forwarded("GET", "/static/page.css", 200) in page.proxy.forwarded[before:]
    png = read_png(shot.read_bytes())
    assert (png.width, png.height) == (width, height)
    assert png.colours >= 8, png  # text, badges, the red failure box and the dark log: not a blank page
    assert shot.stat().st_size > 8 * 1024
    target = os.environ.get("DEPLOYPLAN_SCREENSHOTS")
    if target:
        shutil.copyfile(shot, Path(target) / f"page-{size}.png")


def test_no_token_reached_the_agents_log(page: Page) -> None:
    before = len(page.proxy.forwarded)
    page.chromium.dump_dom(f"{page.proxy.url}/")  # a person's request of this test's own, with its signed JWT
    assert page.proxy.forwarded[before:], "the browser's request did not reach the agent"
    text = page.log_path.read_text("utf-8", errors="replace")
    assert "eyJ" not in text  # no JWT at all: every header and payload starts so
    assert PERSON in text  # the person is the actor of the page's requests
