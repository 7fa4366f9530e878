"""What the step builders know beyond the plan: the server's settings, and what Docker shows now.

On the server every fact is known. A local dry run knows only the plan, so its facts say "not known here"
(None), and the same builders describe the steps in general terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Observed:
    """An environment's container as Docker reports it ('absent' when there is none, 'unknown' when Docker is not
    reachable)."""

    name: str
    id: str | None
    state: str
    image: str | None
    digest: str | None
    started_at: str | None
    restart_count: int
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def absent(cls, name: str) -> Observed:
        return cls(name=name, id=None, state="absent", image=None, digest=None, started_at=None, restart_count=0)

    @classmethod
    def unknown(cls, name: str) -> Observed:
        return cls(name=name, id=None, state="unknown", image=None, digest=None, started_at=None, restart_count=0)


@dataclass(frozen=True)
class Target:
    """Where and how the runtime runs: everything the server owns for one environment."""

    environment: str
    container: str
    binds: tuple[str, ...]
    restart_policy: str
    # The Docker LogConfig of the container: {"Type": "json-file", "Config": {...}}, or None for the daemon's own.
    log_config: Mapping[str, Any] | None

    def describe_logs(self) -> str:
        if self.log_config is None:
            return "the Docker daemon's configured log driver"
        options = ", ".join(f"{k}={v}" for k, v in self.log_config.get("Config", {}).items())
        return f"{self.log_config['Type']} logs ({options})"


@dataclass(frozen=True)
class Facts:
    """Everything a step builder may read besides the plan; None means "not known here" (a local dry run)."""

    target: Target | None = None
    current: Observed | None = None
    # The digest this exact image had when it was first deployed (None: never deployed); `digest_known`
    # says whether that was looked up at all.
    known_digest: str | None = None
    digest_known: bool = False
    env_names: tuple[str, ...] = ()
    deployment_id: str | None = None
