"""Print the four steps as docs/agent.md shows them, from the one step-builder table (runner.core.steps).

The docs are derived, not written twice: a unit test checks that docs/agent.md holds exactly this output between
its `steps:begin` and `steps:end` markers. After changing a step builder, run `python3 tools/stepdocs.py` and
paste its output there.
"""

from __future__ import annotations

from pathlib import Path

from runner.core.facts import Facts, Observed, Target
from runner.core.plan import Plan, load_plan, read_plan_file
from runner.core.steps import describe

REPO = Path(__file__).resolve().parent.parent


def example_plan() -> Plan:
    """plans/runtime.yaml rendered and validated for dev, tag 1.0.3, repository acme/trader, as `render` does."""
    raw = read_plan_file(REPO / "plans" / "runtime.yaml")
    return load_plan(raw, source="plans/runtime.yaml", env="dev", tag="1.0.3", repository="acme/trader")


def markdown() -> str:
    plan = example_plan()
    server = Facts(
        target=Target(
            environment="dev",
            container="runtime-dev",
            binds=("/srv/runtime/dev:/var/lib/runtime:rw",),
            restart_policy="unless-stopped",
            log_config={"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}},
        ),
        current=Observed(
            name="runtime-dev",
            id="4f2c9e",
            state="running",
            image="ghcr.io/acme/trader/runtime:1.0.2",
            digest=None,
            started_at=None,
            restart_count=0,
        ),
        known_digest=None,
        digest_known=True,
        env_names=("RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL"),
        deployment_id="5477aba303a5",
    )
    local = Facts(env_names=server.env_names)
    lines = [
        "| step | on the server (`deployplan dry-run --agent`, and the deploy) "
        "| from the plan alone (`deployplan dry-run`) |",
        "|---|---|---|",
    ]
    for (step, there), (_, here) in zip(describe(plan, server), describe(plan, local), strict=True):
        lines.append(f"| `{step}` | {there} | {here} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
