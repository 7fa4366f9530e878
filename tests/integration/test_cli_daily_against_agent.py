"""The operator's daily CLI against the real agent under gunicorn, real Docker and the installed CLI: `logs
--follow` across a redeploy, `follow` (after Ctrl-C too), `audit pull` and `verify --agent`, colour, GitHub mode
for a deploy that never ran.

Each test starts its own agent: they deploy, redeploy and fail, and count on what runs.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from test_cli_agent import _process_env, _sigint_as_default, apply_args, cli_images, deployment_id, operator_env, ws
from test_cli_agent import running_agent as _running_agent

from forgery import rechained
from realparts import CANARY, Agent, Cli, Images, record

__all__ = ["cli_images", "ws"]  # module fixtures of test_cli_agent, used here too

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def dev_agent(cli: Cli, cli_images: Images, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Agent]:
    with _running_agent(cli, cli_images, docker_client, tmp_path, environments=("dev",)) as agent:
        yield agent


class Running:
    """The CLI as a subprocess whose stdout and stderr lines are read as they come, as a terminal shows them."""

    def __init__(self, cli: Cli, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [str(cli.bin_dir / "deployplan"), *args],
            cwd=cwd,
            env=_process_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_sigint_as_default,  # as a terminal would: Ctrl-C reaches it (see test_cli_agent)
        )
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self.readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.process.stdout), ("err", self.process.stderr))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, name: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put((name, line.rstrip("\n")))

    def expect(self, wanted: Callable[[str, str], bool], *, count: int = 1, timeout: float = 60) -> str:
        """Wait until `count` lines (of either stream, seen so far or to come) are ones `wanted(stream, line)`
        accepts; the last of them. The two pipes are read apart: their lines are not ordered between them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for stream, line in self.seen if wanted(stream, line)]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                pytest.fail(f"not {count} such line(s) within {timeout} s; seen: {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.process.poll() is not None and all(not r.is_alive() for r in self.readers):
                    pytest.fail(f"the CLI ended (exit {self.process.returncode}); seen: {self.seen}")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        for reader in self.readers:
            reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        record(f"$ deployplan {' '.join(self.args)}\n" + "\n".join(line for _, line in self.seen))
        return code

    def text(self, stream: str) -> list[str]:
        return [line for name, line in self.seen if name == stream]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def running(cli: Cli, ws: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(args: list[str], env: dict[str, str]) -> Running:
        started.append(Running(cli, args, cwd=ws, env=env))
        return started[-1]

    yield start
    for process in started:
        process.close()


def deploy(
    cli: Cli, ws: Path, agent: Agent, tag: str, plan: str = "plans/runtime.yaml", **env: str
) -> subprocess.CompletedProcess[str]:
    return cli.run(*apply_args(agent, "dev", tag, plan=plan), cwd=ws, env=operator_env(agent, **env))


# -- logs --follow


def test_logs_follow_goes_on_across_a_redeploy_and_stops_on_ctrl_c(
    cli: Cli, ws: Path, dev_agent: Agent, running: Callable[..., Running]
) -> None:
    first = deploy(cli, ws, dev_agent, "1.0.0")
    assert first.returncode == 0, first.stderr
    follower = running(["logs", "dev", "--follow", "--agent", dev_agent.url], operator_env(dev_agent))
    follower.expect(lambda stream, line: stream == "out" and line.endswith(" runtime: ready"))

    second = deploy(cli, ws, dev_agent, "1.0.1")
    assert second.returncode == 0, second.stderr
    new = deployment_id(second.stdout)
    container = dev_agent.containers["dev"]
    replaced = f"{container} was replaced by deployment {new}; following the new container"
    follower.expect(lambda stream, line: stream == "err" and line == replaced)
    follower.expect(lambda stream, line: stream == "out" and line.endswith(" runtime: ready"), count=2)
    assert follower.stop() == 130

    out = follower.text("out")
    texts = [line.split(" ", 1)[1] for line in out]
    # Each container's lines once, in order: the old one's, then the new one's from its first line.
    assert texts.count("runtime: starting") == 2 and texts.count("runtime: ready") == 2, out
    assert texts.index("runtime: ready") < len(texts) - 1 - texts[::-1].index("runtime: starting")
    assert all(CANARY not in line for _, line in follower.seen)
    assert follower.text("err")[-1] == "stopped following the log of dev"
    assert not any("Traceback" in line for line in follower.text("err"))


# -- follow: a running deployment after Ctrl-C, finished ones, exit codes


def test_apply_interrupted_says_how_to_reattach_and_follow_sees_it_through(
    cli: Cli, ws: Path, dev_agent: Agent, running: Callable[..., Running]
) -> None:
    args = apply_args(dev_agent, "dev", "1.0.0", plan="plans/slow.yaml")
    applying = running(args, operator_env(dev_agent))
    accepted = applying.expect(lambda stream, line: stream == "out" and line.startswith("deployment "))
    found = accepted.split()[1]
    applying.expect(lambda stream, line: line.startswith("[1/4] pull: "))
    assert applying.stop() == 130
    assert f"  deployplan follow {found} --agent {dev_agent.url}" in applying.text("err")

    attached = cli.run("follow", found, "--agent", dev_agent.url, cwd=ws, env=operator_env(dev_agent))
    assert attached.returncode == 0, (attached.stdout, attached.stderr)
    lines = attached.stdout.splitlines()
    assert lines[0].startswith(f"following deployment {found}: ") and lines[0].endswith(f"through {dev_agent.url}")
    assert re.search(r"^\[4/4\] verify: Verify the runtime stays up: succeeded in \d+\.\d s", attached.stdout, re.M), (
        attached.stdout
    )
    assert lines[-1].startswith("deployed and verified: dev runs ") and "1.0.0" in lines[-1]
    assert "\x1b" not in attached.stdout  # not a terminal: no colour

    # The same deployment, finished: followed again, the same outcome and exit code.
    again = cli.run("follow", found, "--agent", dev_agent.url, cwd=ws, env=operator_env(dev_agent))
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == lines[-1]


def test_follow_of_a_failed_deployment_exits_1_with_its_logs(cli: Cli, ws: Path, dev_agent: Agent) -> None:
    failed = deploy(cli, ws, dev_agent, "1.0.1", plan="plans/slow.yaml", RUNTIME_FAULT="crash-after-2s")
    assert failed.returncode == 1, failed.stderr
    found = deployment_id(failed.stdout)
    attached = cli.run("follow", found, "--agent", dev_agent.url, cwd=ws, env=operator_env(dev_agent))
    assert attached.returncode == 1
    assert re.search(r"^\[4/4\] verify: Verify the runtime stays up: failed in ", attached.stdout, re.M)
    assert "  | runtime: fault rehearsal: crashing (RUNTIME_FAULT=crash-after-2s)" in attached.stdout.splitlines()
    assert attached.stderr.startswith("deploy failed: dev 1.0.1: failed in step verify: ")
    unknown = cli.run("follow", "0" * 12, "--agent", dev_agent.url, cwd=ws, env=operator_env(dev_agent))
    assert unknown.returncode == 3 and "404 not_found" in unknown.stderr


def test_colour_only_when_forced_and_never_with_no_color(cli: Cli, ws: Path, dev_agent: Agent) -> None:
    found = deployment_id(deploy(cli, ws, dev_agent, "1.0.0").stdout)
    follow = ("follow", found, "--agent", dev_agent.url)
    plain = cli.run(*follow, cwd=ws, env=operator_env(dev_agent))
    forced = cli.run(*follow, cwd=ws, env=operator_env(dev_agent, FORCE_COLOR="1"))
    never = cli.run(*follow, cwd=ws, env=operator_env(dev_agent, FORCE_COLOR="1", NO_COLOR="1"))
    assert plain.returncode == forced.returncode == never.returncode == 0
    assert "\x1b" not in plain.stdout + never.stdout
    assert "\x1b[1mverify\x1b[0m" in forced.stdout  # the step name emphasised
    assert "\x1b[32msucceeded\x1b[0m" in forced.stdout  # success in green
    assert ANSI.sub("", forced.stdout) == plain.stdout


# -- audit pull and verify --agent


def test_audit_pull_copies_appends_and_refuses_a_copy_that_changed(
    cli: Cli, ws: Path, dev_agent: Agent, tmp_path: Path
) -> None:
    assert deploy(cli, ws, dev_agent, "1.0.0").returncode == 0
    copy = tmp_path / "copy.jsonl"
    server = dev_agent.state_dir / "audit.jsonl"
    pull = ("audit", "pull", "--agent", dev_agent.url, "-o", str(copy))
    full = cli.run(*pull, cwd=ws, env=operator_env(dev_agent))
    assert full.returncode == 0, full.stderr
    assert copy.read_bytes() == server.read_bytes()[: copy.stat().st_size]  # the agent may log a read meanwhile

    assert deploy(cli, ws, dev_agent, "1.0.1").returncode == 0
    incremental = cli.run(*pull, cwd=ws, env=operator_env(dev_agent))
    assert incremental.returncode == 0, incremental.stderr
    assert copy.read_bytes() == server.read_bytes()[: copy.stat().st_size]
    assert re.match(rf"{re.escape(str(copy))}: [1-9]\d* new record\(s\)", incremental.stdout)

    verified = cli.run("audit", "verify", str(copy), "--agent", dev_agent.url, cwd=ws, env=operator_env(dev_agent))
    assert verified.returncode == 0, verified.stderr
    assert "2 anchor(s) match" in verified.stdout
    assert "2 audit head(s) from the agent's history as anchors" in verified.stderr

    # The copy's last record rewritten (its own hash recomputed, so the copy alone still verifies).
    lines = copy.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    copy.write_bytes(b"".join(lines[:-1]) + rechained([last | {"actor": "mallory"}], prev=last["prev"]))
    assert cli.run("audit", "verify", str(copy), cwd=ws).returncode == 0
    before = copy.read_bytes()
    refused = cli.run(*pull, cwd=ws, env=operator_env(dev_agent))
    assert refused.returncode == 1
    assert f"record {last['seq']}, the copy's last, no longer matches the agent's record {last['seq']}" in (
        refused.stderr
    )
    assert copy.read_bytes() == before


# -- GitHub mode: a deploy that never ran


def _github(tmp_path: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}


def test_github_mode_refused_401_exit_3_writes_error_and_summary(
    cli: Cli, ws: Path, dev_agent: Agent, tmp_path: Path
) -> None:
    env = {**operator_env(dev_agent), "DEPLOY_AGENT_TOKEN": "wrong-" + "x" * 40, **_github(tmp_path)}
    result = cli.run(*apply_args(dev_agent, "dev", "1.0.0"), cwd=ws, env=env)
    assert result.returncode == 3
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error::")]
    assert errors == [
        "::error::deploy of dev 1.0.0: refused by the agent (401 unauthorized): "
        "the agent refused (401 unauthorized): the bearer token is not valid"
    ]
    summary = (tmp_path / "summary.md").read_text()
    assert "| result | `refused by the agent (401 unauthorized)` |" in summary
    assert "the bearer token is not valid" in summary and CANARY not in summary
    assert dev_agent.get("/v1/status").json()["environments"]["dev"]["state"] == "absent"


def test_github_mode_unreachable_exit_3_and_invalid_exit_2(cli: Cli, ws: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unreachable = cli.run(
        "apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", "--repository", "acme/trader",
        "--agent", "http://127.0.0.1:9", cwd=ws, env={**operator_env_for_nobody(), **_github(tmp_path / "a")},
    )  # fmt: skip
    assert unreachable.returncode == 3
    assert "::error::deploy of dev 1.0.0: the agent could not be reached: " in unreachable.stdout
    assert "| exit code | 3 |" in (tmp_path / "a" / "summary.md").read_text()
    invalid = cli.run(
        "apply", "plans/runtime.yaml", "--env", "prod", "--tag", "1.0.0", "--repository", "acme/trader",
        "--agent", "http://127.0.0.1:9", cwd=ws,
        env={**operator_env_for_nobody(), "RUNTIME_ENV": "prod", **_github(tmp_path / "b")},
    )  # fmt: skip
    assert invalid.returncode == 2
    assert "::error::deploy of prod 1.0.0: invalid input: nothing was sent: a prod deploy needs --confirm" in (
        invalid.stdout
    )
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "| exit code | 2 |" in summary and "a prod deploy needs --confirm prod:1.0.0" in summary


def operator_env_for_nobody() -> dict[str, str]:
    from realparts import RUNTIME_ENV

    return {**RUNTIME_ENV, "DEPLOY_AGENT_TOKEN": "t" * 48}
