"""Benchmark: the agent's memory per gunicorn worker, idle and over 50 deploys.

The real agent under gunicorn (the project's config: 2 gthread workers x 16 threads, token auth) deploys two
tags of the example runtime (without its healthcheck, `stable_for: 0`) alternately, 50 times, each deploy
followed as `deployplan apply` follows it (GET the deployment until it ends, then GET /v1/status). Each
worker's VmRSS (/proc/<pid>/status) is read idle and after every 10 deploys, the median of SAMPLES readings.
The baseline, measured in the same run, is a worker of a bare Flask app (one route) under the same
gunicorn config: what any Flask agent costs before it does anything.

Targets: every worker <= 80 MB (10^6 bytes) at every point; no growth after the first 10 deploys
(RSS after 50 minus RSS after 10, per worker, <= GROWTH_MB: the 40 more deployments the state holds
take ~0.15 MB by design).

Run: python bench/memory.py
"""

from __future__ import annotations

import os
import sys
import time

from harness import REPO, Lab, Target, answers, lab, machine, median, report_targets, rss_mb, table, worker_pids

DEPLOYS = 50
CHECKPOINT = 10
SAMPLES = 5
LIMIT_MB = 80.0
GROWTH_MB = 1.0
TAGS = ("1.0.0", "1.1.0")
FLOOR_APP = '''\
"""A bare Flask app: the memory floor of a Flask agent under the project's gunicorn config."""

from flask import Flask


def create_app():
    app = Flask("floor")
    app.add_url_rule("/healthz", "healthz", lambda: {"ok": True})
    return app
'''


def worker_rss(master: int) -> dict[int, float]:
    """Each worker's RSS in MB, the median of SAMPLES readings 0.1 s apart."""
    readings: dict[int, list[float]] = {}
    for _ in range(SAMPLES):
        for pid in worker_pids(master):
            readings.setdefault(pid, []).append(rss_mb(pid))
        time.sleep(0.1)
    return {pid: median(values) for pid, values in readings.items()}


def floor_rss(lab_: Lab) -> dict[int, float]:
    """Worker RSS of the bare Flask app under the same gunicorn config, after a few requests."""
    home = lab_.root / "floor"
    home.mkdir()
    (home / "floor_app.py").write_text(FLOOR_APP, "utf-8")
    bind = f"127.0.0.1:{lab.free_port()}"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "DEPLOY_AGENT_BIND": bind}
    # gunicorn puts its working directory (the log's folder) first on sys.path: floor_app is found there.
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "python:agent.gunicorn_conf", "--bind", bind]
    server = lab.AgentServer(env, log_path=home / "floor.log", command=[*gunicorn, "floor_app:create_app()"])
    lab_.agents.append(server)
    server.start()
    assert server.process is not None
    for _ in range(20):
        answers(f"{server.url}/healthz")
    rss = worker_rss(server.process.pid)
    server.stop()
    return rss


def deploy_and_watch(lab_: Lab) -> list[tuple[str, dict[int, float]]]:
    """Idle, then after every CHECKPOINT deploys: each worker's RSS."""
    server = lab_.agent()
    assert server.process is not None
    api, env = lab_.api(server), lab_.runtime_env()
    plans = [lab_.plan(tag) for tag in TAGS]
    for _ in range(20):  # both workers answer something before "idle" is read
        api.call("GET", "/v1/status")
    points = [("idle", worker_rss(server.process.pid))]
    for n in range(1, DEPLOYS + 1):
        api.deploy(plans[n % 2], env)
        api.call("GET", "/v1/status?env=dev")
        if n % CHECKPOINT == 0:
            points.append((f"after {n}", worker_rss(server.process.pid)))
    return points


def main() -> int:
    print(f"machine: {machine()}")
    with Lab("memory") as lab_:
        for tag in TAGS:
            lab_.push_runtime(tag)
        floor = floor_rss(lab_)
        points = deploy_and_watch(lab_)
    return report(floor, points)


def report(floor: dict[int, float], points: list[tuple[str, dict[int, float]]]) -> int:
    pids = sorted(points[0][1])
    print(f"\nVmRSS per gunicorn worker, MB (median of {SAMPLES} readings)")
    rows = [["bare Flask app", *(f"{v:.1f}" for v in floor.values())]]
    rows += [[label, *(f"{rss.get(pid, float('nan')):.1f}" for pid in pids)] for label, rss in points]
    table(["point", *(f"worker {pid}" for pid in pids)], rows)
    floor_mb = max(floor.values())
    peak = max(max(rss.values()) for _, rss in points)
    after_first, last = points[1][1], points[-1][1]
    growth = max(last[pid] - after_first[pid] for pid in pids)
    return report_targets(
        [
            Target("worker RSS, idle", max(points[0][1].values()), "MB", LIMIT_MB, floor_mb, "bare Flask"),
            Target(f"worker RSS, peak over {DEPLOYS} deploys", peak, "MB", LIMIT_MB, floor_mb, "bare Flask"),
            Target(f"growth after {CHECKPOINT} to {DEPLOYS} deploys", growth, "MB", GROWTH_MB),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
