"""`GET /v1/metrics`: Prometheus text, built with the client library from the audit state and from Docker now.

Nothing is counted in memory: every value comes from the fold of the audit log (which every worker replays) or
from Docker at scrape time, so any gunicorn worker answers the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.config import Config
from agent.dockerio import DockerAccess
from agent.ledger import Ledger
from agent.recovery import reconcile
from agent.state import State
from runner.core.facts import Observed
from runner.core.times import parse, seconds

# The exposition format promtool and every Prometheus version read.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class Snapshot:
    """What the audit state says, copied under the ledger's lock."""

    finished: dict[tuple[str, str], int]
    last_finished_at: dict[tuple[str, str], str]
    newest_steps: dict[str, list[dict[str, Any]]]
    running: str | None

    @classmethod
    def of(cls, state: State) -> Snapshot:
        newest = {env: state.deployment(d) for env, d in state.last_finished_by_env.items()}
        return cls(
            finished=dict(state.finished),
            last_finished_at=dict(state.last_finished_at),
            newest_steps={env: [dict(s) for s in d["steps"]] for env, d in newest.items() if d is not None},
            running=state.running,
        )


@dataclass(eq=False)  # the registry keys collectors by identity
class AgentCollector:
    """One scrape: the families of SPEC's table, from the state and from Docker."""

    config: Config
    ledger: Ledger
    docker: DockerAccess
    lock_path: Path

    def collect(self) -> Iterator[Metric]:
        reconcile(self.ledger, self.lock_path)  # a deploy whose worker died is interrupted, not in progress
        snapshot = self.ledger.read(Snapshot.of)
        envs = list(self.config.environments)
        observed, reachable = self.docker.observe_all({e: self.config.environments[e].container for e in envs})
        yield from _deployments(snapshot, envs)
        yield from _runtime(observed, reachable, envs)
        yield GaugeMetricFamily(
            "deployplan_audit_intact",
            "1 while the audit log's chain is intact, 0 when broken.",
            0 if self.ledger.broken else 1,
        )
        yield GaugeMetricFamily("deployplan_docker_reachable", "1 when Docker answers, else 0.", 1 if reachable else 0)
        yield GaugeMetricFamily(
            "deployplan_deploy_in_progress", "1 while a deployment runs, else 0.", 1 if snapshot.running else 0
        )


def _deployments(snapshot: Snapshot, envs: list[str]) -> Iterator[Metric]:
    """What the audit log says: finished deployments, when each outcome last happened, the newest one's steps."""
    total = CounterMetricFamily(
        "deployplan_deployments", "Finished deployments by environment and outcome.", labels=["environment", "state"]
    )
    last = GaugeMetricFamily(
        "deployplan_last_deployment_timestamp_seconds",
        "When the newest deployment in that state finished (Unix time).",
        labels=["environment", "state"],
    )
    for env in envs:
        for outcome in OUTCOMES:
            total.add_metric([env, outcome], snapshot.finished.get((env, outcome), 0))
            when = parse(snapshot.last_finished_at.get((env, outcome)))
            if when is not None:
                last.add_metric([env, outcome], when.timestamp())
    steps = GaugeMetricFamily(
        "deployplan_step_duration_seconds",
        "How long each step of the environment's newest finished deployment took.",
        labels=["environment", "step"],
    )
    for env, found in snapshot.newest_steps.items():
        for step in found:
            took = seconds(step)
            if took is not None:
                steps.add_metric([env, str(step["action"])], took)
    yield from (total, last, steps)


def _runtime(observed: dict[str, Observed], reachable: bool, envs: list[str]) -> Iterator[Metric]:
    """What Docker says now: whether each runtime runs, and its restarts (left out while Docker is unreachable)."""
    up = GaugeMetricFamily("deployplan_runtime_up", "1 when the container is running, else 0.", labels=["environment"])
    restarts = GaugeMetricFamily(
        "deployplan_runtime_restarts", "The container's restart count.", labels=["environment"]
    )
    for env in envs:
        up.add_metric([env], 1 if observed[env].state == "running" else 0)
        if reachable:
            restarts.add_metric([env], observed[env].restart_count)
    yield from (up, restarts)


def exposition(collector: AgentCollector) -> bytes:
    """The text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
