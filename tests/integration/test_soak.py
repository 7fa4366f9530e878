"""Soak: 50 sequential deploys alternating tags and failing runtimes, on real Docker."""

from __future__ import annotations

from pathlib import Path

import docker

from realparts import RUNTIME_ENV, TAGS, Agent, Cli, Images, plan_data

DEPLOYS = 50


def _worker_rss_kib(agent: Agent) -> list[int]:
    assert agent.server.process is not None
    master = agent.server.process.pid
    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [
        int(line.split()[1])
        for pid in workers
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    ]


def test_fifty_deploys(agent: Agent, images: Images, docker_client: docker.DockerClient, cli: Cli) -> None:
    broken = {k: v for k, v in RUNTIME_ENV.items() if k != "RUNTIME_LOG_LEVEL"}
    rss_after_ten: list[int] = []
    for n in range(DEPLOYS):
        tag = TAGS[n % 2]
        fails = n % 5 == 4
        deployment = agent.deploy(plan_data(images, tag, stable_for=0), env=broken if fails else RUNTIME_ENV)
        assert deployment["state"] == ("failed" if fails else "succeeded"), (n, deployment)
        dev = agent.get("/v1/status?env=dev").json()["environments"]["dev"]
        assert dev["last_deployment"]["id"] == deployment["id"]
        assert dev["image"] == images.ref(tag)
        assert dev["state"] == ("exited" if fails else "running"), (n, dev)
        assert len(docker_client.containers.list(all=True, filters={"name": agent.containers["dev"]})) == 1
        if n == 9:
            rss_after_ten = _worker_rss_kib(agent)
    rss_end = _worker_rss_kib(agent)
    assert all(size < 80 * 1024 for size in rss_end), rss_end
    # Bounded: after the first ten deploys, no worker grew by more than 8 MiB over the next forty.
    assert all(end - start < 8 * 1024 for start, end in zip(sorted(rss_after_ten), sorted(rss_end), strict=True))
    verify = cli.run("audit", "verify", str(agent.state_dir / "audit.jsonl"), cwd=agent.state_dir)
    assert verify.returncode == 0, verify.stderr
    assert f"intact, {len(agent.audit())} records" in verify.stdout
