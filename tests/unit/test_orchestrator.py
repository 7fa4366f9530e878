"""One deployment run by agent.deploy against a recording executor: the audit records, the actions, the masking."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from agent.auditlog import AuditLog
from agent.config import Config, load_config
from agent.containerlogs import read_logs
from agent.deploy import LOG_LINE_BYTES, LOG_TAIL_BYTES, Deployment
from agent.executor import ActionFailed, Executor, last_health_output
from agent.ledger import Ledger
from agent.validate import DeployRequest, check_request
from conftest import AGENT_ENV as UNIT_AGENT_ENV
from conftest import DEV_VOLUME
from fakedocker import FakeContainer, FakeDocker
from runner.core.secrets import Masker
from runner.core.steps import Action
from runner.core.text import CUT_MARK

REPOSITORY = "ghcr.io/acme/trader/runtime"
IMAGE = f"{REPOSITORY}:1.0.3"
DIGEST = "sha256:" + "a" * 64
ACTOR = "ops@example.com"
NEW = "c-new"  # the id the recording executor says it created
TOKEN = "s3cret-api-token-value"
RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "verbose-debug", "RUNTIME_API_TOKEN": TOKEN}
PUBLIC = ["RUNTIME_ENV", "RUNTIME_LOG_LEVEL"]
AGENT_ENV = {**UNIT_AGENT_ENV, "DEPLOY_AGENT_IMAGE_REPOSITORY": REPOSITORY}
STEPS = ["pull", "stop_remove", "start", "verify"]
S, F, K = "succeeded", "failed", "skipped"
KEPT = "stopped; kept for inspection with restart policy 'no'"
UNREAD = f"(the container's logs could not be read: no such container: {NEW})"
TAIL_NOTE = f"[cut: the tail keeps lines to {LOG_LINE_BYTES} bytes and {LOG_TAIL_BYTES // 1024} KiB in all]"


def at(second: int) -> str:
    return f"2026-11-30T10:00:{second:02d}.000000000Z"


def plan_data(env: str = "dev") -> dict[str, Any]:
    """plans/runtime.yaml rendered for the agent's repository and the tag 1.0.3."""
    return {
        "version": 1,
        "plan": "runtime",
        "environment": env,
        "image": IMAGE,
        "steps": [
            {"name": "Pull the runtime image", "action": "pull", "timeout": 600},
            {"name": "Stop and remove the current runtime", "action": "stop_remove", "stop_timeout": 30},
            {"name": "Start the new runtime", "action": "start"},
            {"name": "Verify the runtime stays up", "action": "verify", "timeout": 60, "stable_for": 5},
        ],
    }


class Recorder:
    """The executor: records each action, learns a digest and a container id, fails if told; its client (what a
    deployment reads: what runs, the new container's logs) is the fake Docker's."""

    def __init__(
        self, *, fail_at: str | None = None, message: str = "", created: str = NEW, stop_error: str | None = None
    ) -> None:
        self.fail_at, self.message, self.created, self.stop_error = fail_at, message, created, stop_error
        self.actions: list[Action] = []
        self.stopped: list[tuple[str, int]] = []
        self.docker: FakeDocker | None = None
        self.cut = False  # the failure's message ends where Docker cut the runtime's text

    def perform(self, action: Action) -> dict[str, Any]:
        self.actions.append(action)
        if action.kind == self.fail_at:
            raise ActionFailed(self.message, cut=self.cut)
        if action.kind == "pull":
            return {"digest": DIGEST}
        if action.kind == "create":
            return {"container_id": self.created}
        return {}

    def stop_for_inspection(self, container: str, *, timeout: int) -> None:
        self.stopped.append((container, timeout))
        if self.stop_error is not None:
            raise ActionFailed(self.stop_error)

    def client(self) -> Any:
        assert self.docker is not None, "run() gives the recorder its Docker"
        return self.docker.connect(timeout=60)

    def close(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [action.kind for action in self.actions]


@dataclass
class Run:
    """A finished deployment and everything that saw it."""

    id: str
    audit: AuditLog
    ledger: Ledger
    recorder: Recorder
    docker: FakeDocker

    def records(self, deployment_id: str | None = None) -> list[dict[str, Any]]:
        """This deployment's audit records, after the whole chain is verified."""
        every, _ = self.audit.read_from(0)
        assert self.audit.verify().records == len(every)
        assert self.ledger.broken is None
        return [r for r in every if r["deployment_id"] == (deployment_id or self.id)]

    def events(self) -> list[tuple[str, str | None]]:
        return [(r["event"], r.get("step")) for r in self.records()]

    def record(self, event: str, step: str | None = None) -> dict[str, Any]:
        [found] = [r for r in self.records() if r["event"] == event and r.get("step") == step]
        return found

    def state(self) -> dict[str, Any]:
        found = self.ledger.read(lambda s: copy.deepcopy(s.deployment(self.id)))
        assert found is not None
        return found


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config({**AGENT_ENV, "DEPLOY_AGENT_STATE_DIR": str(tmp_path)})


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(AuditLog(tmp_path / "audit.jsonl"))


def request(config: Config, env: dict[str, str], public: list[str]) -> DeployRequest:
    found, findings = check_request({"plan": plan_data(), "env": env, "public_env": public}, config)
    assert findings == []
    assert found is not None
    return found


def deploy(
    config: Config,
    ledger: Ledger,
    recorder: Recorder,
    docker: FakeDocker,
    *,
    env: dict[str, str] = RUNTIME_ENV,
    public: list[str] = PUBLIC,
    deployment_id: str = "d1",
) -> Run:
    """Accept (the deployment_started record, as agent.admission writes it), then run to the end."""
    accepted = request(config, env, public)
    ledger.append("deployment_started", deployment_id=deployment_id, actor=ACTOR, **accepted.started_record())
    recorder.docker = docker
    Deployment(
        id=deployment_id,
        actor=ACTOR,
        request=accepted,
        config=config,
        ledger=ledger,
        executor=cast(Executor, recorder),  # duck-typed: perform, stop_for_inspection, client and close
    ).run()
    return Run(deployment_id, ledger.audit, ledger, recorder, docker)


def running(state: str = "running") -> FakeContainer:
    return FakeContainer(name="runtime-dev", image=f"{REPOSITORY}:1.0.2", state=state)


# -- success

SUCCESS_EVENTS = [("deployment_started", None)] + [
    (event, step) for step in STEPS for event in ("step_started", "step_succeeded")
]


@pytest.mark.parametrize(
    ("present", "kinds", "stop_remove_done"),
    [
        pytest.param(
            running(),
            ["pull", "stop", "remove", "create", "start", "wait_stable"],
            "stopped runtime-dev; removed runtime-dev",
            id="a running container is stopped and removed",
        ),
        pytest.param(
            running("restarting"),
            ["pull", "stop", "remove", "create", "start", "wait_stable"],
            "stopped runtime-dev; removed runtime-dev",
            id="a restarting container is stopped and removed",
        ),
        pytest.param(
            running("exited"),
            ["pull", "remove", "create", "start", "wait_stable"],
            "removed runtime-dev",
            id="an exited container is only removed",
        ),
        pytest.param(
            None,
            ["pull", "nothing", "create", "start", "wait_stable"],
            "no container named runtime-dev: nothing to stop or remove",
            id="no container: nothing to stop or remove",
        ),
    ],
)
def test_success(
    config: Config, ledger: Ledger, present: FakeContainer | None, kinds: list[str], stop_remove_done: str
) -> None:
    docker = FakeDocker()
    if present is not None:
        docker.add(present)
    run = deploy(config, ledger, Recorder(), docker)

    assert run.events() == [*SUCCESS_EVENTS, ("deployment_finished", None)]
    assert run.recorder.kinds() == kinds
    assert run.recorder.stopped == []
    finished = run.record("deployment_finished")
    assert (finished["state"], finished["error"], finished["logs"]) == (S, None, [UNREAD])
    assert docker.touched() == []  # every write went through the executor

    state = run.state()
    assert (state["state"], state["digest"], state["error"], state["logs"]) == (S, DIGEST, None, [UNREAD])
    assert [(s["action"], s["state"]) for s in state["steps"]] == [(step, S) for step in STEPS]
    assert [s["message"] for s in state["steps"]] == [
        f"pulled {IMAGE} ({DIGEST})",
        stop_remove_done,
        f"created runtime-dev from {IMAGE}; started runtime-dev",
        "runtime-dev is running and stayed up for 5 s",
    ]
    assert "cleanup" not in state
    assert ledger.read(lambda s: (s.running, dict(s.digests))) == (None, {IMAGE: DIGEST})


def test_the_actions_carry_the_servers_settings_and_the_deployment(config: Config, ledger: Ledger) -> None:
    docker = FakeDocker()
    docker.add(running())
    run = deploy(config, ledger, Recorder(), docker, deployment_id="d42")

    by_kind = {action.kind: action.options for action in run.recorder.actions}
    assert by_kind == {
        "pull": {"repository": REPOSITORY, "tag": "1.0.3", "timeout": 600, "known_digest": None},
        "stop": {"container": "id-runtime-dev", "timeout": 30},
        "remove": {"container": "id-runtime-dev"},
        "create": {
            "name": "runtime-dev",
            "image": IMAGE,
            "binds": [DEV_VOLUME],
            "restart_policy": "unless-stopped",
            "log_config": {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}},
            "labels": {
                "deployplan.deployment-id": "d42",
                "deployplan.environment": "dev",
                "deployplan.tag": "1.0.3",
            },
            "env_names": ["RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL"],
        },
        "start": {"name": "runtime-dev"},
        "wait_stable": {"container": "runtime-dev", "timeout": 60, "stable_for": 5},
    }
    # Each step's actions are announced before they are performed, in the builders' words.
    assert run.record("step_started", "stop_remove")["actions"] == [
        f"stop runtime-dev (running, {REPOSITORY}:1.0.2; SIGTERM, SIGKILL after 30 s)",
        f"remove runtime-dev ({REPOSITORY}:1.0.2)",
    ]
    assert run.record("step_succeeded", "pull")["digest"] == DIGEST
    assert run.record("step_succeeded", "start")["container_id"] == NEW
    assert TOKEN not in run.audit.path.read_text()


def test_a_second_deploy_of_the_tag_must_pull_the_digest_it_had(config: Config, ledger: Ledger) -> None:
    first = deploy(config, ledger, Recorder(), FakeDocker(), deployment_id="d1")
    second = deploy(config, ledger, Recorder(), FakeDocker(), deployment_id="d2")

    assert first.record("step_started", "pull")["actions"] == [
        f"pull {IMAGE} from the registry (at most 600 s); first deploy of this tag: its digest will be recorded"
    ]
    assert second.record("step_started", "pull")["actions"] == [
        f"pull {IMAGE} from the registry (at most 600 s); the tag must still name {DIGEST}, as when it was first "
        "deployed"
    ]
    assert second.recorder.actions[0].options["known_digest"] == DIGEST
    assert first.recorder.actions[0].options["known_digest"] is None


# -- failure at each action

PULL_FAILED = f"pull of {IMAGE} failed: manifest unknown"


@pytest.mark.parametrize(
    ("fail_at", "message", "kinds", "step_states", "cleaned"),
    [
        pytest.param("pull", PULL_FAILED, ["pull"], [F, K, K, K], False, id="pull"),
        pytest.param("stop", "Docker: cannot stop", ["pull", "stop"], [S, F, K, K], False, id="stop"),
        pytest.param("remove", "Docker: cannot remove", ["pull", "stop", "remove"], [S, F, K, K], False, id="remove"),
        pytest.param(
            "create",
            "Docker: No such image",
            ["pull", "stop", "remove", "create"],
            [S, S, F, K],
            False,
            id="create: nothing was created, nothing to clean up",
        ),
        pytest.param(
            "start",
            "Docker: port is already allocated",
            ["pull", "stop", "remove", "create", "start"],
            [S, S, F, K],
            True,
            id="start: the created container is stopped for inspection",
        ),
        pytest.param(
            "wait_stable",
            "runtime-dev exited with code 78",
            ["pull", "stop", "remove", "create", "start", "wait_stable"],
            [S, S, S, F],
            True,
            id="wait_stable: the started container is stopped for inspection",
        ),
    ],
)
def test_failure(
    config: Config,
    ledger: Ledger,
    fail_at: str,
    message: str,
    kinds: list[str],
    step_states: list[str],
    cleaned: bool,
) -> None:
    docker = FakeDocker()
    docker.add(running())
    run = deploy(config, ledger, Recorder(fail_at=fail_at, message=message), docker)
    failed_step = STEPS[step_states.index(F)]

    reached = STEPS[: step_states.index(F) + 1]
    events = [("deployment_started", None)]
    events += [(event, step) for step in reached[:-1] for event in ("step_started", "step_succeeded")]
    events += [("step_started", failed_step), ("step_failed", failed_step)]
    events += [("cleanup_started", None), ("cleanup_finished", None)] if cleaned else []
    assert run.events() == [*events, ("deployment_finished", None)]
    assert run.recorder.kinds() == kinds
    assert run.record("step_failed", failed_step)["message"] == message
    assert run.recorder.stopped == ([(NEW, 30)] if cleaned else [])
    assert docker.touched() == []

    state = run.state()
    assert (state["state"], state["error"]) == (F, {"step": failed_step, "message": message})
    assert [s["state"] for s in state["steps"]] == step_states
    assert state["steps"][step_states.index(F)]["message"] == message
    assert ledger.read(lambda s: s.running) is None
    if cleaned:
        assert run.record("cleanup_started")["container_id"] == NEW
        assert run.record("cleanup_started")["message"] == "stop the new container and keep it for inspection"
        assert (state["cleanup"]["container_id"], state["cleanup"]["message"]) == (NEW, KEPT)
        assert state["logs"] == [UNREAD]
    else:
        assert "cleanup" not in state
        assert state["logs"] == []  # no new container, no log lines


def test_failure_at_pull_touches_nothing(config: Config, ledger: Ledger) -> None:
    docker = FakeDocker()
    docker.add(running())
    run = deploy(config, ledger, Recorder(fail_at="pull", message=PULL_FAILED), docker)

    assert docker.calls == []  # not even a read: the current container was never looked at
    assert run.state()["digest"] is None
    assert ledger.read(lambda s: dict(s.digests)) == {}


def test_a_cleanup_that_fails_says_why(config: Config, ledger: Ledger) -> None:
    recorder = Recorder(
        fail_at="wait_stable", message="runtime-dev exited with code 1", stop_error=f"could not stop {NEW}: gone"
    )
    run = deploy(config, ledger, recorder, FakeDocker())

    assert run.record("cleanup_finished")["message"] == f"could not stop {NEW}: gone"
    assert run.state()["cleanup"]["message"] == f"could not stop {NEW}: gone"
    assert run.state()["error"] == {"step": "verify", "message": "runtime-dev exited with code 1"}


def test_docker_unreachable_fails_stop_remove_before_any_action(config: Config, ledger: Ledger) -> None:
    run = deploy(config, ledger, Recorder(), FakeDocker(reachable=False))
    reason = "Docker: cannot inspect runtime-dev: Docker is not reachable (fake)"

    assert run.recorder.kinds() == ["pull"]
    assert run.record("step_started", "stop_remove")["actions"] == []
    assert run.record("step_failed", "stop_remove")["message"] == reason
    assert run.state()["error"] == {"step": "stop_remove", "message": reason}
    assert [s["state"] for s in run.state()["steps"]] == [S, F, K, K]


# -- masking: what comes from the container never carries a secret value

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq3f9\n"
    "XkR2Zt1b7Yc0Lz4VwQ9mJp8sR3kE5aH2nL6uT1yD0cF7gB4\n"
    "-----END PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("env", "said", "masked"),
    [
        pytest.param(
            RUNTIME_ENV,
            f"runtime-dev is unhealthy: upstream refused token {TOKEN} | log level verbose-debug",
            "runtime-dev is unhealthy: upstream refused token **** | log level verbose-debug",
            id="a healthcheck prints the secret; the public value stays",
        ),
        pytest.param(
            {**RUNTIME_ENV, "UPSTREAM_PASSWORD": "hunter2", "UPSTREAM_PASSPHRASE": "hunter2-and-more"},
            "runtime-dev is unhealthy: login hunter2-and-more refused, hunter2 too",
            "runtime-dev is unhealthy: login **** refused, **** too",
            id="the longest secret wins when one contains another",
        ),
    ],
)
def test_a_secret_in_a_failure_is_masked(
    config: Config, ledger: Ledger, env: dict[str, str], said: str, masked: str
) -> None:
    docker = FakeDocker()
    docker.add(FakeContainer(name="new", image=IMAGE, output=[(at(1), "stdout", said)]))
    recorder = Recorder(fail_at="wait_stable", message=said, created="id-new")
    run = deploy(config, ledger, recorder, docker, env=env)

    assert run.record("step_failed", "verify")["message"] == masked
    state = run.state()
    assert state["error"] == {"step": "verify", "message": masked}
    assert state["steps"][3]["message"] == masked
    assert state["logs"] == [masked]
    assert recorder.stopped == [("id-new", 30)]
    text = run.audit.path.read_text()
    secrets = [value for name, value in env.items() if name not in PUBLIC]
    assert [line for value in secrets for line in value.splitlines() if line in text] == []


def test_a_multi_line_secret_printed_line_by_line_is_masked_line_by_line() -> None:
    """A deploy request cannot send a multi-line value (422: no control characters in a value), but a container the
    agent did not start may hold one: its log is masked line by line."""
    printed = ["loading the TLS key", *PEM.splitlines(), "  " + PEM.splitlines()[1] + "  (indented)", "ready"]
    docker = FakeDocker()
    output = [(at(n), "stderr" if n % 2 else "stdout", line) for n, line in enumerate(printed)]
    docker.add(FakeContainer(name="new", image=IMAGE, output=output))

    tail = read_logs(docker, "id-new", tail=100, masker=Masker([PEM]), line_limit=2048, total_limit=32 * 1024)

    texts = [line.text for line in tail.lines]
    assert texts == ["loading the TLS key", "****", "****", "****", "****", "  ****  (indented)", "ready"]


def test_a_secret_in_a_failed_cleanup_is_masked(config: Config, ledger: Ledger) -> None:
    recorder = Recorder(fail_at="start", message="Docker: conflict", stop_error=f"could not stop {NEW}: {TOKEN}")
    run = deploy(config, ledger, recorder, FakeDocker())

    assert run.record("cleanup_finished")["message"] == f"could not stop {NEW}: ****"
    assert TOKEN not in run.audit.path.read_text()


# -- the log tail: bounded, each line and all of them


def test_a_10_mb_line_is_cut_to_the_line_limit_with_a_note(config: Config, ledger: Ledger) -> None:
    output = [
        (at(1), "stdout", "starting"),
        (at(2), "stdout", "x" * (10 * 2**20)),
        (at(3), "stderr", f"fatal: token {TOKEN} rejected"),
    ]
    docker = FakeDocker()
    docker.add(FakeContainer(name="new", image=IMAGE, output=output))
    run = deploy(config, ledger, Recorder(fail_at="wait_stable", message="exited", created="id-new"), docker)

    logs = run.state()["logs"]
    # Docker's tail counts 16 KiB pieces: the long line's last 100 pieces crowd out "starting".
    assert [logs[0], logs[2]] == [TAIL_NOTE, "fatal: token **** rejected"]
    assert len(logs) == 3
    long = logs[1]
    cut = long.removeprefix("x" * LOG_LINE_BYTES)
    mark = re.escape(CUT_MARK.format(size="SIZE", limit=LOG_LINE_BYTES)).replace("SIZE", "[0-9]+")
    assert re.fullmatch(mark, cut), cut
    assert sum(len(line.encode()) + 1 for line in logs[1:]) <= LOG_TAIL_BYTES


@pytest.mark.parametrize(
    ("length", "at_least"),
    [
        pytest.param(3000, 3000, id="a 3000-byte line, read whole"),
        pytest.param(10 * 2**20, 100 * 16384, id="a 10 MB line, of which the tail gave 100 pieces of 16 KiB"),
    ],
)
def test_the_cut_note_does_not_understate_the_size_of_a_long_line(
    config: Config, ledger: Ledger, length: int, at_least: int
) -> None:
    docker = FakeDocker()
    docker.add(FakeContainer(name="new", image=IMAGE, output=[(at(1), "stdout", "x" * length)]))
    run = deploy(config, ledger, Recorder(created="id-new"), docker)

    found = re.search(r"cut: ([0-9]+) bytes in all", run.state()["logs"][1])
    assert found is not None
    assert int(found.group(1)) >= at_least  # it said 2070 (the bytes kept) before the fix


def test_the_whole_tail_stays_within_its_byte_limit_keeping_the_newest(config: Config, ledger: Ledger) -> None:
    output = [(at(n), "stdout", f"line {n:02d} " + "y" * 3000) for n in range(60)]
    docker = FakeDocker()
    docker.add(FakeContainer(name="new", image=IMAGE, output=output))
    run = deploy(config, ledger, Recorder(created="id-new"), docker)

    logs = run.state()["logs"]
    assert logs[0] == TAIL_NOTE
    kept = logs[1:]
    assert sum(len(line.encode()) + 1 for line in kept) <= LOG_TAIL_BYTES
    assert [line[:7] for line in kept] == [f"line {n:02d}" for n in range(60 - len(kept), 60)]
    assert 10 <= len(kept) < 60
    for n, line in enumerate(kept, 60 - len(kept)):
        assert line.startswith(f"line {n:02d} " + "y" * (LOG_LINE_BYTES - 8) + " [... cut: ")
        assert line.endswith(f" bytes in all; lines are kept to {LOG_LINE_BYTES} bytes]")


def test_logs_that_cannot_be_read_are_said_so(config: Config, ledger: Ledger) -> None:
    run = deploy(config, ledger, Recorder(fail_at="wait_stable", message="exited"), FakeDocker())

    assert run.state()["logs"] == [UNREAD]
    assert ("logs", (NEW,)) in [(name, args) for name, args, _ in run.docker.calls]


@pytest.mark.parametrize(
    ("output", "shown", "cut"),
    [
        ("ok\n", "ok", False),
        ("line one\nline two\n", "line one | line two", False),
        ("", "no check output", False),
        ("y" * 4090 + TOKEN[:6] + "...", "y" * 4090 + TOKEN[:6], True),  # Docker kept 4096 bytes and said so
        ("short...", "short...", False),  # a check that prints dots was not cut
    ],
)
def test_the_last_health_output_says_when_docker_cut_it(output: str, shown: str, cut: bool) -> None:
    assert last_health_output({"Health": {"Log": [{"Output": output}]}}) == (shown, cut)


def test_a_secret_cut_by_dockers_health_output_limit_shows_no_part(config: Config, ledger: Ledger) -> None:
    """Docker keeps 4096 bytes of a check's output: a secret that crosses that end showed its first characters."""
    said = "y" * 600 + TOKEN[:10]  # what last_health_output gives of a cut output: it ends where Docker cut it
    docker = FakeDocker()
    docker.add(FakeContainer(name="new", image=IMAGE, output=[(at(1), "stdout", "up")]))
    recorder = Recorder(fail_at="wait_stable", message=f"runtime-dev is unhealthy: {said}", created="id-new")
    recorder.cut = True
    run = deploy(config, ledger, recorder, docker, env=RUNTIME_ENV)

    message = run.record("step_failed", "verify")["message"]
    assert TOKEN[:4] not in message and message.endswith("****..."), message[-40:]


def test_a_pull_failure_that_echoes_the_registry_password_shows_no_part_of_it(tmp_path: Path, ledger: Ledger) -> None:
    """The dry run's registry answer never holds the server's registry password; a pull step's failure, which goes
    to the audit log, /v1/deployments, the page and the job summary, must not either."""
    password = "registry-pass-7f3a91c2"
    config = load_config(
        {
            **AGENT_ENV,
            "DEPLOY_AGENT_STATE_DIR": str(tmp_path),
            "DEPLOY_AGENT_REGISTRY_USERNAME": "deployer",
            "DEPLOY_AGENT_REGISTRY_PASSWORD": password,
        }
    )
    message = f"pull of {REPOSITORY}:1.0.3 failed: Get https://registry/v2/: unauthorized: login {password} refused"
    run = deploy(config, ledger, Recorder(fail_at="pull", message=message), FakeDocker())

    failed = run.record("step_failed", "pull")["message"]
    assert password not in failed and password not in json.dumps(run.state())
    assert failed.endswith("unauthorized: login **** refused")
