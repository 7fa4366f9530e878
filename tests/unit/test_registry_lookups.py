"""The registry lookups of dry runs hold at most a quarter of a worker's threads: any reader may send a dry run,
and each waits on the registry (through the engine) for up to REGISTRY_TIMEOUT. One beyond the quarter answers at
once, the registry not asked (`busy`); `dry-run --agent` then exits 3 saying to ask again, and `check` warns."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from agent import gunicorn_conf
from agent.registry import REGISTRY_TIMEOUT, ask_registry
from agent.threadshares import RegistryLookups
from conftest import RUNTIME_ENV, TOKEN, Api, InProcessCli, plan
from fakedocker import FakeContainer, FakeDocker

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "d" * 64
GHCR = "ghcr.io/acme/trader/runtime"
DRY_RUN = ("plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader")


def body() -> dict[str, Any]:
    return {"plan": plan(), "env": RUNTIME_ENV, "dry_run": True}


class StalledRegistry(FakeDocker):
    """A registry that takes the engine's question and says nothing until released, as one in an outage does."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Semaphore(0)  # released once per question that reached the registry
        self.answer = threading.Event()

    def inspect_distribution(self, image: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
        self.asked.release()
        self.answer.wait(30)
        return super().inspect_distribution(image, auth_config)

    def questions(self) -> int:
        return sum(name == "inspect_distribution" for name, _, _ in self.calls)


@pytest.mark.parametrize(("threads", "slots"), [(16, 4), (8, 2), (4, 1), (3, 0), (0, 0)])
def test_registry_lookups_may_hold_a_quarter_of_a_workers_threads(threads: int, slots: int) -> None:
    lookups = RegistryLookups(threads)
    with ExitStack() as held:
        granted = [held.enter_context(lookups.slot()) for _ in range(threads + 2)]
        assert granted == [True] * slots + [False] * (threads + 2 - slots) and lookups.waiting == slots
    assert lookups.waiting == 0  # every slot is given back


def test_gunicorn_sizes_the_registry_lookups_from_the_workers_threads(api: Api) -> None:
    worker = SimpleNamespace(wsgi=api.app, cfg=SimpleNamespace(threads=12))  # what post_worker_init is given
    gunicorn_conf.post_worker_init(worker)
    services = api.app.extensions["deployplan"]
    assert (services.admission.registry_lookups.slots, services.reads.long_polls.slots) == (3, 6)
    assert services.admission.registry_lookups.threads == 12


def test_a_dry_run_beyond_a_quarter_of_the_threads_answers_at_once_without_asking(
    make_api: Callable[..., Api],
) -> None:
    """Found in review: every dry run waited on a stalled registry (25 s each), and 64 of them held every thread
    of the agent, so /healthz and /v1/status stopped answering."""
    docker = StalledRegistry()
    docker.registry[plan()["image"]] = DIGEST
    api = make_api(docker=docker)
    quarter = gunicorn_conf.threads // 4  # 4 of 16
    with ThreadPoolExecutor(max_workers=quarter + 1) as pool:
        try:
            waiting = [pool.submit(api.deploy, body()) for _ in range(quarter)]
            for _ in range(quarter):
                assert docker.asked.acquire(timeout=10), "a dry run never reached the registry"
            beyond = pool.submit(api.deploy, body()).result(timeout=5)  # before: it waited with the others
        finally:
            docker.answer.set()
        answered = [future.result(timeout=10) for future in waiting]

    assert beyond.status_code == 200, beyond.get_json()
    assert beyond.get_json()["registry"] == {
        "found": False,
        "busy": True,
        "reason": f"not asked about {plan()['image']}: the agent is busy asking the registry for other dry runs "
        "(at most 4 at once in each worker, a quarter of its 16 threads); ask again in a few seconds",
    }
    registry_schema = yaml.safe_load((REPO / "schemas" / "agent-api.openapi.yaml").read_text())["components"][
        "schemas"
    ]["DryRun"]["properties"]["registry"]
    Draft202012Validator(registry_schema).validate(beyond.get_json()["registry"])  # the document allows it
    assert docker.questions() == quarter
    assert [a.get_json()["registry"] for a in answered] == [{"found": True, "digest": DIGEST}] * quarter
    # The slots were given back: the next dry run asks the registry again.
    assert api.deploy(body()).get_json()["registry"] == {"found": True, "digest": DIGEST}
    assert docker.questions() == quarter + 1
    assert docker.touched() == [] and api.audit() == []


def test_a_registry_that_does_not_answer_in_time_is_not_found_saying_so() -> None:
    """The engine is asked with a 10 s timeout (it was 30 s): a stalled registry holds a thread that long, then is
    reported as not answering, not as Docker being unreachable."""

    class Silent(FakeDocker):
        def inspect_distribution(self, image: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
            raise requests.ReadTimeout("UnixHTTPConnectionPool(host='localhost', port=None): Read timed out.")

    docker = Silent()
    answer = ask_registry(docker.connect, f"{GHCR}:1.0.3", auth=None)

    assert REGISTRY_TIMEOUT == 10
    assert ("connect", (), {"timeout": 10}) in docker.calls
    assert answer == {
        "found": False,
        "reason": f"the registry did not answer about {GHCR}:1.0.3 within 10 s (asked through Docker)",
    }


# -- what the CLI makes of a busy answer


@pytest.fixture
def busy_agent(make_api: Callable[..., Api], serve: Callable[[Api], str]) -> tuple[Api, str, RegistryLookups]:
    docker = FakeDocker()
    docker.add(FakeContainer("runtime-dev", f"{GHCR}:1.0.2"))
    docker.registry[f"{GHCR}:1.0.3"] = DIGEST
    api = make_api(docker=docker, DEPLOY_AGENT_IMAGE_REPOSITORY=GHCR)
    return api, serve(api), api.app.extensions["deployplan"].admission.registry_lookups


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", tmp_path / "infra")
    shutil.copytree(REPO / "plans", tmp_path / "plans")
    return tmp_path


def operator(url: str) -> dict[str, str]:
    return {**RUNTIME_ENV, "DEPLOY_AGENT_URL": url, "DEPLOY_AGENT_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/trader"}


def test_dry_run_agent_exits_3_saying_to_ask_again_when_the_agent_is_busy(
    busy_agent: tuple[Api, str, RegistryLookups], cli: InProcessCli, workspace: Path
) -> None:
    api, url, lookups = busy_agent
    with ExitStack() as held:
        for _ in range(lookups.slots):  # other dry runs wait on the registry
            held.enter_context(lookups.slot())
        busy = cli.run("dry-run", *DRY_RUN, "--agent", url, cwd=workspace, env=operator(url))
    free = cli.run("dry-run", *DRY_RUN, "--agent", url, cwd=workspace, env=operator(url))

    assert busy.returncode == 3, busy.stdout + busy.stderr
    assert (
        f"registry        NOT ASKED: not asked about {GHCR}:1.0.3: the agent is busy asking the registry" in busy.stdout
    )
    assert "NOT FOUND" not in busy.stdout
    assert busy.stderr == (
        "error: the agent is busy asking the registry for other dry runs, so it did not ask whether it has "
        f"{GHCR}:1.0.3; ask again in a few seconds; nothing was touched\n"
    )
    assert free.returncode == 0, free.stdout + free.stderr
    assert f"registry        has {GHCR}:1.0.3 ({DIGEST})" in free.stdout
    assert api.docker.touched() == [] and api.audit() == []


def test_check_warns_when_the_agent_is_too_busy_to_ask_the_registry(
    busy_agent: tuple[Api, str, RegistryLookups], cli: InProcessCli, workspace: Path
) -> None:
    _, url, lookups = busy_agent
    with ExitStack() as held:
        for _ in range(lookups.slots):
            held.enter_context(lookups.slot())
        checked = cli.run("check", "--env", "dev", "--tag", "1.0.3", cwd=workspace, env=operator(url))

    out = checked.stdout
    assert f"warn  registry: not asked about {GHCR}:1.0.3: the agent is busy asking the registry" in out, out
    assert "ask again in a few seconds\n" in out
    assert "FAIL  registry" not in out and "ok    registry" not in out
    assert "ok    dry run: the agent accepts the plan for dev, and this caller may deploy it" in out
