"""Benchmark: one deploy with `deployplan apply`, against the same four steps done by the docker CLI, the docker SDK
and (when an Ansible venv is given) an Ansible playbook.

Every contender does, to the same container (name, variables, volume, restart policy): pull the image (already
present locally, so the registry is asked and nothing is downloaded), remove the running container, run a new one,
wait until it is running. The image is the example runtime without its healthcheck, so the agent's verify
(`stable_for: 0`) and "poll until running" wait for the same thing; `stop_timeout: 0`, like `docker rm -f`.
For scale, an "engine floor" contender makes the same Engine API calls from this process's warm client: no
client, the agent included, can do the four steps faster. The contenders take turns, one warm-up round first,
then RUNS timed rounds; medians are reported.

`deployplan apply` runs as the deploy job runs it: the console script of a fresh venv where deploy.yml's install
step ran (the CLI alone from requirements/deploy.txt, then this checkout).

Targets (ratios in the same run; guards now, not goals): `apply` end to end <= 1.40x the CLI sequence; the
agent's own time (the audit log's `deployment_started` to `deployment_finished`, i.e. from the 202 to the final
record) <= 1.10x the engine floor, and <= 0.15x Ansible when it runs.

Run: python bench/deploy.py [--ansible VENV]   (VENV: a venv with `pip install ansible requests`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import docker
import docker.errors

from harness import (
    REPOSITORY,
    RUNS,
    RUNTIME_ENV_NAMES,
    Lab,
    Target,
    fmt,
    installed_venv,
    lab,
    machine,
    median,
    plan_text,
    report_targets,
    table,
    timed,
)

TAG = "1.0.0"
POLL_SECONDS = 0.1  # the agent's own verify poll interval
SDK_SCRIPT = """\
import os, sys, time
import docker, docker.errors
ref, name, bind, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
client = docker.from_env()
client.images.pull(ref)
try:
    client.containers.get(name).remove(force=True)
except docker.errors.NotFound:
    pass
container = client.containers.run(
    ref, name=name, detach=True, environment={n: os.environ[n] for n in names},
    volumes=[bind], restart_policy={"Name": "unless-stopped"},
)
container.reload()
while container.status != "running":
    time.sleep(0.1)
    container.reload()
"""


@dataclass
class Bench:
    """The lab, the image, the agent, and what every contender needs to deploy the same container."""

    lab: Lab
    ref: str
    state_dir: Path
    workspace: Path
    cli_env: dict[str, str]
    runtime: dict[str, str]
    venv: Path
    deployment_ids: list[str] = field(default_factory=list)
    # Each apply's deployment id, and when its process started and ended (wall clock, as the audit log's times).
    apply_spans: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.lab.container("dev")

    @property
    def bind(self) -> str:
        return f"{self.lab.root / 'data'}:/var/lib/runtime:rw"


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True) -> str:
    """Run a command; its stdout, or an error with all of its output."""
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise lab.LabError(f"{' '.join(argv[:3])} ... exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "DEPLOY_", "GITHUB_", "CF_ACCESS_"))}


# -- the contenders


def docker_cli(b: Bench) -> None:
    env = {**clean_environ(), **b.runtime}
    run(["docker", "pull", "--quiet", b.ref])
    run(["docker", "rm", "-f", b.name], check=False)  # an absent container is fine
    variables = [arg for name in RUNTIME_ENV_NAMES for arg in ("-e", name)]  # values from env, not argv
    run(
        ["docker", "run", "-d", "--name", b.name, *variables, "-v", b.bind, "--restart", "unless-stopped", b.ref],
        env=env,
    )
    while run(["docker", "inspect", "-f", "{{.State.Status}}", b.name]).strip() != "running":
        time.sleep(POLL_SECONDS)


def engine_floor(b: Bench) -> None:
    """The same engine API calls from this process's warm client: no client, the agent included, can beat it."""
    api, (repository, _, tag) = b.lab.client.api, b.ref.rpartition(":")
    for record in api.pull(repository, tag=tag, stream=True, decode=True):
        if "error" in record:
            raise lab.LabError(f"pull failed: {record}")
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_container(b.name, force=True)
    host_config = api.create_host_config(binds=[b.bind], restart_policy={"Name": "unless-stopped"})
    api.create_container(b.ref, name=b.name, environment=b.runtime, host_config=host_config, detach=True)
    api.start(b.name)
    while api.inspect_container(b.name)["State"]["Status"] != "running":
        time.sleep(POLL_SECONDS)


def docker_sdk(b: Bench) -> None:
    env = {**clean_environ(), **b.runtime}
    run([sys.executable, "-c", SDK_SCRIPT, b.ref, b.name, b.bind, ",".join(RUNTIME_ENV_NAMES)], env=env)


def apply(b: Bench) -> None:
    argv = [str(b.venv / "bin" / "deployplan"), "apply", "plans/runtime.yaml", "--env", "dev", "--tag", TAG]
    began = datetime.now(UTC)
    out = run([*argv, "--repository", REPOSITORY], env=b.cli_env, cwd=b.workspace)
    ended = datetime.now(UTC)
    found = re.search(r"deployment (\w+) accepted", out)
    if found is None or "deployed and verified" not in out:
        raise lab.LabError(f"apply did not deploy:\n{out}")
    b.deployment_ids.append(found.group(1))
    b.apply_spans.append((found.group(1), began, ended))


def playbook(b: Bench) -> list[dict[str, object]]:
    """The four steps as Ansible tasks (JSON is YAML)."""
    repository, _, tag = b.ref.rpartition(":")
    env = {name: f"{{{{ lookup('env', '{name}') }}}}" for name in RUNTIME_ENV_NAMES}
    tasks: list[dict[str, object]] = [
        {"name": "pull", "community.docker.docker_image_pull": {"name": repository, "tag": tag, "pull": "always"}},
        {
            "name": "stop_remove",
            "community.docker.docker_container": {"name": b.name, "state": "absent", "force_kill": True},
        },
        {
            "name": "start",
            "no_log": True,
            "community.docker.docker_container": {
                "name": b.name,
                "image": b.ref,
                "state": "started",
                "env": env,
                "volumes": [b.bind],
                "restart_policy": "unless-stopped",
            },
        },
        {
            "name": "verify",
            "community.docker.docker_container_info": {"name": b.name},
            "register": "info",
            "until": "info.container.State.Status == 'running'",
            "retries": 100,
            "delay": 1,
        },
    ]
    interpreter = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    return [{"hosts": "localhost", "connection": "local", "gather_facts": False, "vars": interpreter, "tasks": tasks}]


def ansible(venv: Path, b: Bench) -> Callable[[Bench], None]:
    """A contender running the playbook with the venv's ansible-playbook."""
    path = b.lab.root / "playbook.yml"
    path.write_text(json.dumps(playbook(b), indent=2), "utf-8")
    home = b.lab.root / "ansible"
    env = {
        **clean_environ(),
        **b.runtime,
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    }
    argv = [str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", str(path)]

    def contender(b: Bench) -> None:
        run(argv, env=env, cwd=b.lab.root)

    return contender


def ansible_or_skip(venv: Path | None, b: Bench) -> Callable[[Bench], None] | str:
    """The Ansible contender, or why it is skipped (tried once here, so a broken venv is a SKIP, not a crash)."""
    if venv is None:
        return "no --ansible VENV given (python -m venv V && V/bin/pip install ansible requests)"
    if not (venv / "bin" / "ansible-playbook").is_file():
        return f"{venv}/bin/ansible-playbook not found"
    contender = ansible(venv, b)
    try:
        contender(b)
    except lab.LabError as e:
        return f"the playbook failed: {str(e).strip().splitlines()[-1]}"
    return contender


# -- measuring


def setup(lab_: Lab) -> Bench:
    ref = lab_.push_runtime(TAG)
    state_dir = lab_.root / "state"
    server = lab_.agent(state_dir=state_dir)
    workspace = lab_.root / "workspace"
    (workspace / "plans").mkdir(parents=True)
    (workspace / "infra").mkdir()
    text = plan_text(lab_.registry.host, verify_timeout=10, stop_timeout=0)
    (workspace / "plans" / "runtime.yaml").write_text(text, "utf-8")
    (workspace / "infra" / "ENV_SCHEMA.md").write_text((lab.REPO_ROOT / "infra" / "ENV_SCHEMA.md").read_text())
    runtime = lab_.runtime_env()
    cli_env = {**clean_environ(), **runtime, "DEPLOY_AGENT_URL": server.url, "DEPLOY_AGENT_TOKEN": lab_.token}
    venv = installed_venv(lab_.root)
    return Bench(
        lab=lab_, ref=ref, state_dir=state_dir, workspace=workspace, cli_env=cli_env, runtime=runtime, venv=venv
    )


def audit_times(state_dir: Path) -> dict[tuple[str, str], datetime]:
    """(deployment id, event) -> the audit record's time, for deployment_started and deployment_finished."""
    times: dict[tuple[str, str], datetime] = {}
    for line in (state_dir / "audit.jsonl").read_text("utf-8").splitlines():
        record = json.loads(line)
        if record["event"] in ("deployment_started", "deployment_finished"):
            times[record["deployment_id"], record["event"]] = datetime.fromisoformat(record["time"])
    return times


def agent_seconds(state_dir: Path, deployment_ids: list[str]) -> list[float]:
    """Per deployment: the audit `time` of deployment_finished minus that of deployment_started."""
    times = audit_times(state_dir)
    return [(times[i, "deployment_finished"] - times[i, "deployment_started"]).total_seconds() for i in deployment_ids]


def apply_phases(b: Bench) -> dict[str, list[float]]:
    """Where an apply's time goes: its process start until the agent recorded the deployment (CLI start, rendering,
    validation, the POST), the agent's own time, and from the final record to the process's end (learning the
    end through the long poll, the /v1/status check, exiting)."""
    times = audit_times(b.state_dir)
    phases: dict[str, list[float]] = {
        "  until deployment_started": [],
        "  agent": [],
        "  after deployment_finished": [],
    }
    for deployment_id, began, ended in b.apply_spans[1:]:  # not the warm-up
        started, finished = times[deployment_id, "deployment_started"], times[deployment_id, "deployment_finished"]
        phases["  until deployment_started"].append((started - began).total_seconds())
        phases["  agent"].append((finished - started).total_seconds())
        phases["  after deployment_finished"].append((ended - finished).total_seconds())
    return phases


def measure(b: Bench, contenders: dict[str, Callable[[Bench], None]]) -> dict[str, list[float]]:
    """Take turns: a warm-up round, then RUNS timed rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(RUNS + 1):
        for name, contender in contenders.items():
            seconds = timed(partial(contender, b))
            if round_ > 0:
                samples[name].append(seconds)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ansible", type=Path, metavar="VENV", help="a venv with ansible (bundles community.docker)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with Lab("deploy") as lab_:
        b = setup(lab_)
        contenders: dict[str, Callable[[Bench], None]] = {
            "docker CLI": docker_cli,
            "docker SDK, fresh python": docker_sdk,
            "engine floor (warm client)": engine_floor,
        }
        playbook_or_reason = ansible_or_skip(args.ansible, b)
        if callable(playbook_or_reason):
            contenders["ansible-playbook"] = playbook_or_reason
        contenders["deployplan apply"] = apply
        samples = measure(b, contenders)
        b.deployment_ids[:] = b.deployment_ids[1:]  # the warm-up deploy
        samples["agent (202 -> final record)"] = agent_seconds(b.state_dir, b.deployment_ids)
        samples |= apply_phases(b)
    return report(samples, playbook_or_reason if isinstance(playbook_or_reason, str) else None)


def report(samples: dict[str, list[float]], ansible_skipped: str | None) -> int:
    medians = {name: median(values) for name, values in samples.items()}
    cli, floor = medians["docker CLI"], medians["engine floor (warm client)"]
    print(f"\none deploy, median of {RUNS} (min-max); ratios to the docker CLI sequence and to the engine floor")
    rows = [
        [name, fmt(m, "s"), f"{min(v):.3f}-{max(v):.3f}", f"{m / cli:.2f}x", f"{m / floor:.2f}x"]
        for name, v in samples.items()
        for m in [medians[name]]
    ]
    table(["contender", "median", "range", "vs CLI", "vs floor"], rows)
    if ansible_skipped:
        print(f"ansible-playbook: SKIP ({ansible_skipped})")
    apply, agent = medians["deployplan apply"], medians["agent (202 -> final record)"]
    targets = [
        Target("apply end to end vs docker CLI", apply, "s", 1.40, cli, "docker CLI", per_baseline=True),
        Target("agent's own time vs engine floor", agent, "s", 1.10, floor, "engine floor", per_baseline=True),
    ]
    if "ansible-playbook" in medians:
        playbook = medians["ansible-playbook"]
        targets.append(Target("agent's own time vs Ansible", agent, "s", 0.15, playbook, "ansible", per_baseline=True))
        print(f"(for scale: apply end to end is {apply / playbook:.2f}x ansible-playbook)")
    skipped = {"agent's own time vs Ansible": ansible_skipped} if ansible_skipped else {}
    return report_targets(targets, skipped=skipped)


if __name__ == "__main__":
    sys.exit(main())
