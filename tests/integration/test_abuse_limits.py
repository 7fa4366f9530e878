"""Limits under abuse, against the real agent under gunicorn and real Docker: a reader holding a valid identity
cannot read a fragment of a secret through a cut, starve the agent with long polls or with dry runs that wait on
a stalled registry, or fill its disk with refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
import requests

import lab
from realparts import PREFIX, RUNTIME_ENV, Agent, AgentFactory, Images, plan_data

SECRET = "s3cr3t-Value-0123456789"  # 23 characters, as in the review
# The secret starts 10 bytes before the end of Docker's first 16 KiB piece: 13 characters fall in the second.
LONG_LINE = 'head -c 16374 /dev/zero | tr "\\0" x; echo "$STRADDLING_SECRET end"'


@pytest.fixture
def straddling_container(agent: Agent, images: Images, docker_client: docker.DockerClient) -> Iterator[str]:
    """A container under the environment's name whose log holds one long line with the secret across Docker's
    16 KiB piece boundary, written by the json-file driver as deployed runtimes are."""
    docker_client.images.pull(images.repository, tag="1.0.0")
    container = docker_client.containers.run(
        images.ref("1.0.0"),
        entrypoint=["/bin/sh", "-c", f"{LONG_LINE}; sleep 60"],
        name=agent.containers["dev"],
        environment={"STRADDLING_SECRET": SECRET},
        log_config=docker.types.LogConfig(type="json-file"),
        user="65534:65534",
        detach=True,
    )
    try:
        deadline = time.monotonic() + 20
        while b"end" not in container.logs(tail=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield agent.containers["dev"]
    finally:
        container.remove(force=True)


def test_a_tail_that_begins_in_the_second_piece_of_a_long_line_shows_no_part_of_a_secret(
    agent: Agent, straddling_container: str
) -> None:
    """Found in review: `tail=1` began in Docker's second piece, and the answer began with 13 of the secret's 23
    characters."""
    second_piece = agent.get("/v1/logs/dev?tail=1").json()
    whole_line = agent.get("/v1/logs/dev?tail=2").json()

    assert [line["text"] for line in second_piece["lines"]] == ["**** end"], second_piece
    assert [line["text"] for line in whole_line["lines"]] == ["x" * 16374 + "**** end"]
    assert all(SECRET[i : i + 4] not in str(answer) for answer in (second_piece, whole_line) for i in range(20))


def test_64_long_polls_leave_healthz_and_status_answering(agent: Agent, images: Images) -> None:
    """Found in review: 31 concurrent long polls stopped /healthz, 32 stopped /v1/status, for 25 s each time."""
    response = agent.post(
        {"plan": plan_data(images, "1.0.0", stable_for=45, verify_timeout=60), "env": RUNTIME_ENV, "public_env": []}
    )
    assert response.status_code == 202, response.text
    deployment_id = response.json()["deployment_id"]
    url = f"{agent.url}/v1/deployments/{deployment_id}?wait=25"
    deadline = time.monotonic() + 60
    # Quiet from here: verify waits 45 s for stability and records nothing, so no record ends a long poll early.
    while agent.get(f"/v1/deployments/{deployment_id}").json()["steps"][3]["state"] != "running":
        assert time.monotonic() < deadline, "the deployment never reached verify"
        time.sleep(0.2)

    def long_poll(_: int) -> tuple[int, float]:
        started = time.monotonic()
        answer = requests.get(url, headers=agent.headers(), timeout=60)
        return answer.status_code, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=64) as pool:
        polls = [pool.submit(long_poll, n) for n in range(64)]
        time.sleep(2)  # every long poll has reached a worker
        health = requests.get(f"{agent.url}/healthz", timeout=15)
        status = requests.get(f"{agent.url}/v1/status", headers=agent.headers(), timeout=15)
        answers = [poll.result() for poll in polls]

    assert health.status_code == 200 and health.json() == {"ok": True}
    assert status.status_code == 200 and status.json()["agent"]["deploy_in_progress"] == deployment_id
    assert all(code == 200 for code, _ in answers)
    # Two workers of 16 threads hold at most 16 long polls; the others answered at once, not after 25 s.
    assert sum(took < 15 for _, took in answers) >= 64 - 16, sorted(took for _, took in answers)


def test_64_dry_runs_on_a_registry_that_never_answers_leave_healthz_and_status_answering(
    make_agent: AgentFactory,
) -> None:
    """Found in review: each dry run waited on the registry (25 s when it never answers), no bound counted them,
    and 64 readers' dry runs stopped /healthz and /v1/status."""
    with lab.silent_registry() as port:
        silent = Images(repository=f"127.0.0.1:{port}/{PREFIX}-silent/runtime", digests={})
        agent = make_agent(environments=("dev",), extra_env={"DEPLOY_AGENT_IMAGE_REPOSITORY": silent.repository})
        body = {"plan": plan_data(silent, "1.0.0"), "env": RUNTIME_ENV, "dry_run": True}

        def dry_run(_: int) -> tuple[int | str, dict[str, object], float]:
            started = time.monotonic()
            try:
                answer = requests.post(f"{agent.url}/v1/deploy", json=body, headers=agent.headers(), timeout=40)
            except requests.Timeout:
                return "no answer within 40 s", {}, time.monotonic() - started
            return answer.status_code, answer.json().get("registry", answer.json()), time.monotonic() - started

        def probe(path: str) -> int | str:
            try:
                return requests.get(f"{agent.url}{path}", headers=agent.headers(), timeout=5).status_code
            except requests.Timeout:
                return "no answer within 5 s"

        with ThreadPoolExecutor(max_workers=64) as pool:
            started = time.monotonic()
            runs = [pool.submit(dry_run, n) for n in range(64)]
            time.sleep(2)  # every dry run has reached a worker
            probes = [probe(path) for _ in range(3) for path in ("/healthz", "/v1/status")]
            probed = time.monotonic() - started
            answers = [run.result() for run in runs]

    assert probes == [200] * 6
    asked_took = [took for _, registry, took in answers if registry.get("busy") is not True]
    # The probes answered while lookups still held threads: not after they had all given up.
    assert asked_took and probed < min(asked_took), (probed, sorted(asked_took))
    assert {code for code, _, _ in answers} == {200}, answers  # a dry run is never a refusal
    asked = [(registry, took) for _, registry, took in answers if registry.get("busy") is not True]
    busy = [(registry, took) for _, registry, took in answers if registry.get("busy") is True]
    # Two workers of 16 threads ask the registry at most 4 times each at once; the others answered at once.
    assert len(asked) <= 8 and len(busy) >= 64 - 8, (len(asked), len(busy))
    assert all(took < 5 for _, took in busy), sorted(took for _, took in busy)
    busy_reason = f"not asked about {silent.repository}:1.0.0: the agent is busy asking the registry"
    assert all(str(registry["reason"]).startswith(busy_reason) for registry, _ in busy), busy[:1]
    for registry, took in asked:
        assert registry["found"] is False and took < 15, (registry, took)
        assert f"did not answer about {silent.repository}:1.0.0 within 10 s" in str(registry["reason"])


def test_the_shares_follow_the_workers_real_thread_count(make_agent: AgentFactory) -> None:
    """gunicorn's post_worker_init sizes the shares from the worker's threads: with --threads 4, one registry
    lookup per worker (a quarter), and the busy answer says so; the default 16 would have said 4 of 16."""
    with lab.silent_registry() as port:
        silent = Images(repository=f"127.0.0.1:{port}/{PREFIX}-threads/runtime", digests={})
        agent = make_agent(
            environments=("dev",),
            extra_env={"DEPLOY_AGENT_IMAGE_REPOSITORY": silent.repository, "GUNICORN_CMD_ARGS": "--threads 4"},
        )
        body = {"plan": plan_data(silent, "1.0.0"), "env": RUNTIME_ENV, "dry_run": True}
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(f"{agent.url}/v1/deploy", json=body, headers=agent.headers(), timeout=40),
                    range(6),
                )
            )
    busy = [a.json()["registry"] for a in answers if a.json()["registry"].get("busy") is True]
    assert len(busy) >= 6 - 2, [a.json() for a in answers]
    assert all("(at most 1 at once in each worker, a quarter of its 4 threads)" in b["reason"] for b in busy), busy


def test_300_refusals_across_workers_leave_31_records_and_one_count(agent: Agent, images: Images) -> None:
    """Found in review: 16 threads made 1057 refusals in 15 s, and the audit log grew 6.6 MB."""
    bad = {"plan": {**plan_data(images, "1.0.0"), "steps": []}, "env": RUNTIME_ENV}
    before = (agent.state_dir / "audit.jsonl").stat().st_size if (agent.state_dir / "audit.jsonl").exists() else 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: agent.post(bad), range(300)))

    codes = [answer.status_code for answer in answers]
    # The 31st refusal closes the door; requests already inside when it was counted still end as refusals.
    refused = codes.count(422)
    assert set(codes) == {422, 429} and 31 <= refused <= 31 + 8, codes
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert limited.json()["error"]["code"] == "too_many_requests" and int(limited.headers["Retry-After"]) >= 1
    assert agent.get("/v1/status").status_code == 200  # reads go on
    events = [record["event"] for record in agent.audit()]
    assert events.count("deploy_refused") == refused
    grown = (agent.state_dir / "audit.jsonl").stat().st_size - before
    assert grown < refused * 8 * 1024, grown  # the refusals that were audited, and nothing for the others
