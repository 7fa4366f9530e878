"""Benchmark: `GET /v1/status` under 8 concurrent keep-alive clients, against `GET /healthz` as the floor; and the
same status load while 8 followers long-poll a running deployment.

The real agent under gunicorn (the project's config: 2 gthread workers x 16 threads, token auth) serves dev,
where a runtime container was deployed and runs, and prod (no container). The load generator is this
process: 8 threads, one keep-alive `http.client` connection each, for DURATION seconds per run; it shares
the machine's cores with the agent and with dockerd (each status request asks Docker), so the figures are a
floor for a server whose clients come from elsewhere. For scale, a third contender makes, with the same 8
threads and warm clients of its own, only the Docker round trips no status answer can avoid (inspect the dev and
the prod container). Runs alternate the contenders, one warm-up each first; the figures are medians over RUNS runs.

Then, RUNS rounds of: a deploy that stays in verify for 30 s (`stable_for: 30`); status alone for DURATION; the
same status load while 8 more clients each hold `GET /v1/deployments/<id>?wait=25` open (a follower's long poll:
the deployment does not change, so each waits out its whole wait).

Targets (ratios in the same run): /v1/status >= 0.40x the requests/s of /healthz, p99 <= 2.0x; with 8
long-polling followers, status keeps >= 0.90x of its requests/s.

Run: python bench/status.py
"""

from __future__ import annotations

import contextlib
import http.client
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit

import docker
import docker.errors

from harness import RUNS, Lab, Target, machine, median, report_targets, table

CLIENTS = 8
DURATION = 10.0
WARM_UP = 2.0
DOCKER_INSPECT = "docker inspect dev+prod, 8 threads"
ALONE = "GET /v1/status, a deploy in verify"
FOLLOWED = "the same, 8 followers long-polling"


@dataclass
class Load:
    """What the clients of one run saw: every request's latency (seconds) and the failures."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client(Protocol):
    """One connection of the load generator: `send` makes one request and raises if it failed."""

    def send(self) -> None: ...

    def close(self) -> None: ...


class HttpGet:
    """GET one path over one keep-alive connection; anything but 200 fails."""

    def __init__(self, url: str, path: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        self.path, self.headers = path, {"Authorization": f"Bearer {token}"}

    def send(self) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise http.client.HTTPException(f"{response.status} {body[:200]!r}")

    def close(self) -> None:
        self.conn.close()


class DockerInspect:
    """For scale: the Docker round trips of a status answer, inspect each environment's container (warm client)."""

    def __init__(self, containers: list[str], *, version: str) -> None:
        self.api, self.containers = docker.APIClient(version=version), containers

    def send(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.api.inspect_container(name)

    def close(self) -> None:
        self.api.close()


def drive(client: Client, *, until: float, load: Load) -> None:
    """Send requests back to back until `until`; the first failure ends this client."""
    mine: list[float] = []
    try:
        while (start := time.perf_counter()) < until:
            client.send()
            mine.append(time.perf_counter() - start)
    except (OSError, http.client.HTTPException, docker.errors.DockerException) as e:
        load.failures.append(f"{type(e).__name__}: {e}")
    finally:
        client.close()
        load.latencies.extend(mine)  # list.extend is atomic under the GIL


def run_load(make_client: Callable[[], Client], *, seconds: float) -> Load:
    """CLIENTS threads, each with its own client, for `seconds`."""
    load = Load()
    clients = [make_client() for _ in range(CLIENTS)]
    start = time.perf_counter()
    until = start + seconds
    threads = [threading.Thread(target=drive, args=(c,), kwargs={"until": until, "load": load}) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - start
    if load.failures:
        raise SystemExit(f"{len(load.failures)} failure(s), first: {load.failures[0]}")
    return load


class LongPoll:
    """A follower: one long poll of a deployment that does not change, held open for its whole wait."""

    def __init__(self, url: str, deployment_id: str, after: int, token: str) -> None:
        self.get = HttpGet(url, f"/v1/deployments/{deployment_id}?wait={int(DURATION) + 2}&after={after}", token)
        self.get.conn.timeout = DURATION + 30

    def hold(self) -> None:
        try:
            self.get.send()
        finally:
            self.get.close()


def main() -> int:
    print(f"machine: {machine()}")
    print(f"load generator: {CLIENTS} threads in this process, http.client keep-alive, {DURATION:g} s per run")
    # The clients mostly wait on sockets; a short switch interval keeps a woken client from queueing for the GIL.
    sys.setswitchinterval(0.0005)
    with Lab("status") as lab_:
        tag = "1.0.0"
        lab_.push_runtime(tag)
        server = lab_.agent()
        lab_.api(server).deploy(lab_.plan(tag), lab_.runtime_env())
        runs = measure(contenders(lab_, server.url))
        runs |= with_followers(lab_, server.url, tag)
    return report(runs)


def with_followers(lab_: Lab, url: str, tag: str) -> dict[str, list[Load]]:
    """RUNS rounds: status alone, then status while CLIENTS followers long-poll a deployment in verify."""
    api, status = lab_.api(lab_.agents[0]), partial(HttpGet, url, "/v1/status", lab_.token)
    runs: dict[str, list[Load]] = {ALONE: [], FOLLOWED: []}
    for _ in range(RUNS):
        code, accepted = api.call(
            "POST", "/v1/deploy", {"plan": lab_.plan(tag, stable_for=30, verify_timeout=60), "env": lab_.runtime_env()}
        )
        if code != 202:
            raise SystemExit(f"the deploy for the followers was refused: {code} {accepted}")
        deployment_id = accepted["deployment_id"]
        while api.call("GET", f"/v1/deployments/{deployment_id}")[1]["steps"][3]["state"] != "running":
            time.sleep(0.05)  # in verify: nothing changes for 30 s
        runs[ALONE].append(run_load(status, seconds=DURATION))
        after = api.call("GET", f"/v1/deployments/{deployment_id}")[1]["audit_head"]["seq"]
        followers = [LongPoll(url, deployment_id, after, lab_.token) for _ in range(CLIENTS)]
        threads = [threading.Thread(target=f.hold) for f in followers]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every follower holds its thread now
        runs[FOLLOWED].append(run_load(status, seconds=DURATION))
        for thread in threads:
            thread.join()
        while api.call("GET", f"/v1/deployments/{deployment_id}")[1]["state"] == "running":
            time.sleep(0.2)
    return runs


def contenders(lab_: Lab, url: str) -> dict[str, Callable[[], Client]]:
    containers = [lab_.container("dev"), lab_.container("prod")]
    return {
        "GET /healthz": partial(HttpGet, url, "/healthz", lab_.token),
        "GET /v1/status": partial(HttpGet, url, "/v1/status", lab_.token),
        DOCKER_INSPECT: partial(DockerInspect, containers, version=lab_.client.api.api_version),
    }


def measure(contenders: dict[str, Callable[[], Client]]) -> dict[str, list[Load]]:
    """Take turns: a warm-up run each, then RUNS runs each."""
    runs: dict[str, list[Load]] = {name: [] for name in contenders}
    for make_client in contenders.values():
        run_load(make_client, seconds=WARM_UP)
    for _ in range(RUNS):
        for name, make_client in contenders.items():
            runs[name].append(run_load(make_client, seconds=DURATION))
    return runs


def report(runs: dict[str, list[Load]]) -> int:
    figures = {
        name: {
            "rate": median([load.rate for load in loads]),
            "p50": median([load.percentile(0.50) * 1000 for load in loads]),
            "p99": median([load.percentile(0.99) * 1000 for load in loads]),
        }
        for name, loads in runs.items()
    }
    print(f"\nmedians of {RUNS} runs of {DURATION:g} s")
    rows = [
        [name, f"{f['rate']:.0f}", f"{f['p50']:.1f}", f"{f['p99']:.1f}", " ".join(f"{load.rate:.0f}" for load in loads)]
        for (name, f), loads in zip(figures.items(), runs.values(), strict=True)
    ]
    table(["requests", "req/s", "p50 ms", "p99 ms", "req/s of each run"], rows)
    status, floor = figures["GET /v1/status"], figures["GET /healthz"]
    alone, followed = figures[ALONE], figures[FOLLOWED]
    return report_targets(
        [
            Target(
                "/v1/status throughput", status["rate"], "req/s", 0.40, floor["rate"], "/healthz", per_baseline=True
            ),
            Target("/v1/status p99 latency", status["p99"], "ms", 2.0, floor["p99"], "/healthz", per_baseline=True),
            Target(
                "status with 8 long-polling followers",
                followed["rate"],
                "req/s",
                0.90,
                alone["rate"],
                "status alone",
                per_baseline=True,
            ),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
