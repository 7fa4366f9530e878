"""Prune: which images stay and why (a table), the request's shape, and the endpoint against a recording Docker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from agent.auditlog import AuditLog
from agent.errors import BadRequest
from agent.prune import Candidate, candidates, check_body, plan_prune
from conftest import REPOSITORY, Api, record_deployment
from fakedocker import FakeContainer, FakeDocker

R = REPOSITORY


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image(n: int, *tags: str, digests: tuple[int, ...] = (), others: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "Id": f"sha256:image{n}",
        "RepoTags": [f"{R}:{t}" for t in tags] + [o for o in others if "@" not in o],
        "RepoDigests": [f"{R}@{digest(d)}" for d in digests] + [o for o in others if "@" in o],
        "Size": 1000 * n,
    }


def test_candidates_are_this_repositorys_images_with_only_its_references() -> None:
    images = [
        image(1, "1.0.0", digests=(1,)),
        image(2, digests=(2,)),  # pulled by digest only: still ours
        {"Id": "sha256:x", "RepoTags": ["registry.test/acme/other/runtime:1.0.0"], "RepoDigests": [], "Size": 5},
        {"Id": "sha256:y", "RepoTags": [f"{R}-evil:1.0.0"], "RepoDigests": [], "Size": 5},  # a prefix, not ours
        image(3, "1.0.3", digests=(3,), others=("mirror.test/runtime:1.0.3",)),
    ]
    found = {c.id: c for c in candidates(images, R)}
    assert set(found) == {"sha256:image1", "sha256:image2", "sha256:image3"}
    assert found["sha256:image1"].references == (f"{R}:1.0.0", f"{R}@{digest(1)}")
    assert found["sha256:image2"].shown() == f"{R}@{digest(2)}"
    assert found["sha256:image3"].shared and not found["sha256:image1"].shared


def cands(*specs: tuple[int, int]) -> list[Candidate]:
    """(image number, digest number) pairs as candidates tagged 1.0.<n>."""
    return candidates([image(n, f"1.0.{n}", digests=(d,)) for n, d in specs], R)


@pytest.mark.parametrize(
    ("keep", "in_use", "succeeded", "kept", "removed"),
    [
        pytest.param(2, {}, {"dev": [digest(1), digest(2), digest(3)]}, [2, 3], [1], id="keep-2-newest"),
        pytest.param(0, {}, {"dev": [digest(1), digest(2), digest(3)]}, [], [1, 2, 3], id="keep-0"),
        pytest.param(0, {"sha256:image3": "runtime-dev"}, {}, [3], [1, 2], id="in-use-kept-even-at-0"),
        pytest.param(
            1, {"sha256:image1": "someone-else"}, {"dev": [digest(2)]}, [1, 2], [3], id="another-container-keeps"
        ),
        pytest.param(1, {}, {"dev": [digest(1), digest(2)], "prod": [digest(1)]}, [1, 2], [3], id="per-environment"),
        pytest.param(5, {}, {"dev": [digest(3)]}, [3], [1, 2], id="never-succeeded-goes"),
        pytest.param(2, {}, {"dev": [digest(1), digest(2), digest(3)], "prod": [digest(1)]}, [1, 2, 3], [], id="union"),
    ],
)
def test_plan_prune(
    keep: int, in_use: dict[str, str], succeeded: dict[str, list[str]], kept: list[int], removed: list[int]
) -> None:
    plan = plan_prune(cands((1, 1), (2, 2), (3, 3)), in_use=in_use, succeeded=succeeded, keep=keep)
    assert [k["image"] for k in plan.kept] == [f"{R}:1.0.{n}" for n in kept]
    assert [c.shown() for c in plan.remove] == [f"{R}:1.0.{n}" for n in removed]
    for entry in plan.kept:
        assert entry["reason"].startswith(("used by container", "one of the newest"))


def test_the_reason_names_the_container_and_the_environment() -> None:
    plan = plan_prune(
        cands((1, 1), (2, 2)), in_use={"sha256:image1": "runtime-dev"}, succeeded={"prod": [digest(2)]}, keep=1
    )
    assert [k["reason"] for k in plan.kept] == [
        "used by container runtime-dev",
        "one of the newest 1 successful digests of prod",
    ]


@pytest.mark.parametrize(
    ("sent", "paths"),
    [
        ({}, ["$.keep", "$.dry_run"]),
        ({"keep": 2}, ["$.dry_run"]),
        ({"dry_run": True}, ["$.keep"]),
        ({"keep": 51, "dry_run": True}, ["$.keep"]),
        ({"keep": -1, "dry_run": True}, ["$.keep"]),
        ({"keep": True, "dry_run": True}, ["$.keep"]),
        ({"keep": 2.0, "dry_run": True}, ["$.keep"]),
        ({"keep": "2", "dry_run": True}, ["$.keep"]),
        ({"keep": 2, "dry_run": "yes"}, ["$.dry_run"]),
        ({"keep": 2, "dry_run": True, "force": True}, ["$.force"]),
        ([], ["$"]),
    ],
)
def test_a_bad_prune_body_names_every_field(sent: Any, paths: list[str]) -> None:
    with pytest.raises(BadRequest) as raised:
        check_body(sent)
    assert [d["path"] for d in raised.value.details] == paths


# -- the endpoint


@pytest.fixture
def pruning(make_api: Callable[..., Api]) -> Api:
    docker = FakeDocker()
    docker.image_list = [
        image(1, "1.0.1", digests=(1,)),
        image(2, "1.0.2", digests=(2,)),
        image(3, "1.0.3", digests=(3,), others=("mirror.test/runtime:1.0.3",)),
        image(4, "1.0.4", digests=(4,)),
        {"Id": "sha256:other", "RepoTags": ["busybox:latest"], "RepoDigests": [], "Size": 7},
    ]
    docker.add(FakeContainer("runtime-dev", f"{R}:1.0.4"))
    api = make_api(docker=docker)
    log = AuditLog(api.state_dir / "audit.jsonl")
    for n in (1, 2):  # 1.0.1 then 1.0.2 succeeded in dev
        record_deployment(log, f"d{n}", "dev", f"1.0.{n}", "succeeded", digest=digest(n))
    return api


def test_a_dry_run_prune_lists_and_touches_nothing(pruning: Api) -> None:
    answer = pruning.post("/v1/prune", {"keep": 1, "dry_run": True}).get_json()
    assert [k["image"] for k in answer["kept"]] == [f"{R}:1.0.2", f"{R}:1.0.4"]
    assert [r["image"] for r in answer["remove"]] == [f"{R}:1.0.1", f"{R}:1.0.3"]
    assert answer["bytes"] == 1000  # 1.0.3 is also named by another repository: removing ours frees nothing
    assert (answer["removed"], answer["errors"]) == ([], [])
    assert pruning.docker.touched() == []
    assert [r["event"] for r in pruning.audit()][-1] == "deployment_finished"


def test_a_prune_removes_only_this_repositorys_references_and_is_audited(pruning: Api) -> None:
    answer = pruning.post("/v1/prune", {"keep": 1, "dry_run": False}).get_json()

    assert [r["image"] for r in answer["removed"]] == [f"{R}:1.0.1", f"{R}:1.0.3"] and answer["errors"] == []
    left = {i["Id"]: i["RepoTags"] + i["RepoDigests"] for i in pruning.docker.image_list}
    assert "sha256:image1" not in left
    assert left["sha256:image3"] == ["mirror.test/runtime:1.0.3"]
    assert left["sha256:other"] == ["busybox:latest"]
    started, finished = pruning.audit()[-2:]
    assert (started["event"], finished["event"]) == ("prune_started", "prune_finished")
    assert [r["image"] for r in started["remove"]] == [f"{R}:1.0.1", f"{R}:1.0.3"]
    assert finished["bytes"] == 1000 and finished["errors"] == []


def test_a_prune_while_a_deploy_holds_the_lock_is_409(pruning: Api) -> None:
    from agent.lock import try_lock

    lock = try_lock(pruning.state_dir / "deploy.lock")
    assert lock is not None
    try:
        response = pruning.post("/v1/prune", {"keep": 1, "dry_run": False})
    finally:
        lock.release()
    assert (response.status_code, response.get_json()["error"]["code"]) == (409, "deploy_in_progress")
    assert pruning.docker.calls == []


def test_a_prune_checks_the_whole_chain_under_the_lock_as_a_deploy_does(pruning: Api) -> None:
    """Found in review: a prune checked only what the agent had read since it started, so an old record edited in
    place (the size unchanged) did not stop it, where it stops a deploy."""
    assert pruning.post("/v1/prune", {"keep": 1, "dry_run": True}).status_code == 200  # every record read
    path = pruning.state_dir / "audit.jsonl"
    text = path.read_text("utf-8")
    edited = text.replace('"tag":"1.0.1"', '"tag":"1.0.9"', 1)
    assert len(edited) == len(text) != 0 and edited != text
    path.write_text(edited, "utf-8")

    response = pruning.post("/v1/prune", {"keep": 1, "dry_run": False})

    assert (response.status_code, response.get_json()["error"]["code"]) == (503, "audit_broken")
    assert "a prune is refused" in response.get_json()["error"]["message"]
    assert pruning.docker.touched() == []


def test_a_prune_marks_a_dead_workers_deployment_interrupted_first(pruning: Api) -> None:
    """Found in review: a prune wrote its records while a deployment whose worker had died was still running."""
    record_deployment(AuditLog(pruning.state_dir / "audit.jsonl"), "d3", "dev", "1.0.4", None)  # no lock held

    assert pruning.post("/v1/prune", {"keep": 1, "dry_run": False}).status_code == 200

    events = [(r["event"], r["deployment_id"]) for r in pruning.audit()[-3:]]
    assert events == [("deployment_interrupted", "d3"), ("prune_started", None), ("prune_finished", None)]


def test_a_bad_prune_body_is_400_with_details(pruning: Api) -> None:
    response = pruning.post("/v1/prune", {"keep": 99})
    found = response.get_json()["error"]
    assert (response.status_code, found["code"]) == (400, "bad_request")
    assert [d["path"] for d in found["details"]] == ["$.keep", "$.dry_run"]
    assert pruning.docker.calls == []


def test_a_dry_run_prune_takes_no_lock(pruning: Api) -> None:
    """Found in review: a dry-run prune took the deploy lock, so any reader could hold deploys off with it."""
    from agent.lock import try_lock

    lock = try_lock(pruning.state_dir / "deploy.lock")
    assert lock is not None
    try:
        assert pruning.post("/v1/prune", {"keep": 1, "dry_run": True}).status_code == 200
    finally:
        lock.release()


def test_a_dry_run_prune_during_a_deploy_is_409_as_the_contract_says(pruning: Api) -> None:
    """SPEC: a prune answers 409 while a deploy runs; a dry run too, without taking the lock itself."""
    from agent.lock import try_lock

    record_deployment(AuditLog(pruning.state_dir / "audit.jsonl"), "d3", "dev", "1.0.4", None)
    lock = try_lock(pruning.state_dir / "deploy.lock")  # its worker is alive and holds the lock
    assert lock is not None
    try:
        response = pruning.post("/v1/prune", {"keep": 1, "dry_run": True})
    finally:
        lock.release()
    assert (response.status_code, response.get_json()["error"]["code"]) == (409, "deploy_in_progress")
    assert "d3" in response.get_json()["error"]["message"]
    assert pruning.docker.calls == []


def test_docker_gone_midway_is_an_error_entry_and_the_prune_is_recorded(pruning: Api) -> None:
    """Found in review: a connection error after some removals escaped, and prune_finished was never written."""
    calls = []
    remove = pruning.docker.remove_image

    def flaky(reference: str) -> None:
        calls.append(reference)
        if "1.0.3" in reference:
            raise requests.ConnectionError("Docker went away")
        remove(reference)

    pruning.docker.remove_image = flaky  # type: ignore[method-assign]
    answer = pruning.post("/v1/prune", {"keep": 1, "dry_run": False}).get_json()
    assert [r["image"] for r in answer["removed"]] == [f"{R}:1.0.1"]
    assert [e["image"] for e in answer["errors"]] == [f"{R}:1.0.3"] and "went away" in answer["errors"][0]["message"]
    finished = pruning.audit()[-1]
    assert finished["event"] == "prune_finished" and finished["errors"] == answer["errors"]
