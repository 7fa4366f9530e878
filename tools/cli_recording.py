"""Record docs/cli-recording.md from a real run: `apply`, Ctrl-C, `follow`, and `logs --follow` across the redeploy.

A local registry with two versions of the example runtime and the real agent under gunicorn on loopback (as
tools/demo.py starts them); dev runs the first version. Then, as two terminals would: one follows dev's log, the
other deploys the second version, stops following with Ctrl-C (SIGINT) and re-attaches with `follow`. Each
terminal's output (stdout and stderr as one screen) is written as text. Everything started is removed at the end.

Run: python3 tools/cli_recording.py [OUTPUT]   (default: docs/cli-recording.md)
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

import docker
from demo import REPOSITORY, workspace

import lab

NAME = f"deployplan-recording-{secrets.token_hex(3)}"
FIRST, SECOND = "1.0.0", "1.1.0"


class Terminal:
    """One command on a screen: stdout and stderr in one stream, as it comes, with `^C` where it was pressed."""

    started: ClassVar[list[Terminal]] = []  # every one of them, to stop what is still running at the end

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        Terminal.started.append(self)
        self.screen = [f"$ deployplan {shlex.join(args)}"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.screen.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 120) -> tuple[int, re.Match[str]]:
        """The first line after line `after` of the screen that matches, and where it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for number, line in enumerate(list(self.screen)):
                found = re.search(pattern, line) if number > after else None
                if found:
                    return number, found
            time.sleep(0.1)
        raise SystemExit(f"recording: no line matching {pattern!r}:\n" + "\n".join(self.screen))

    def ctrl_c(self) -> int:
        time.sleep(0.3)
        self.screen.append("^C")
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self) -> int:
        code = self.process.wait(timeout=120)
        self.reader.join(timeout=10)
        self.screen.append(f"(exit {code})")
        return code


def main(output: Path) -> None:
    client = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix=f"{NAME}-"))
    registry = lab.Registry()
    agent: lab.AgentServer | None = None
    try:
        registry.start()
        image_repo = f"{registry.host}/{REPOSITORY}/runtime"
        for tag in (FIRST, SECOND):
            lab.build_runtime_image(client, f"{image_repo}:{tag}", label=tag)
            lab.push(client, f"{image_repo}:{tag}")
        lab.remove_images(client, image_repo)
        token = secrets.token_hex(24)
        (root / "data").mkdir()
        agent_env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(lab.REPO_ROOT),  # this checkout's agent, whatever else is installed
            **lab.agent_settings(
                state_dir=root / "state",
                image_repository=image_repo,
                containers={"dev": f"{NAME}-dev"},
                volumes={"dev": f"{root / 'data'}:/var/lib/runtime:rw"},
                token=token,
            ),
        }
        command = [sys.executable, "-c", "from agent.main import main; main()"]
        agent = lab.AgentServer(agent_env, log_path=root / "agent.log", command=command).start()
        ws = workspace(root, registry.host)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_"))}
        env.update(
            PYTHONPATH=str(lab.REPO_ROOT),  # this checkout's CLI
            DEPLOY_AGENT_URL=agent.url,
            DEPLOY_AGENT_TOKEN=token,
            RUNTIME_ENV="dev",
            RUNTIME_LOG_LEVEL="info",
            RUNTIME_API_TOKEN=f"demo-{secrets.token_hex(12)}",
        )
        plan = ["plans/runtime.yaml", "--env", "dev", "--repository", REPOSITORY]
        first = Terminal(["apply", *plan, "--tag", FIRST], cwd=ws, env=env)
        if first.finish() != 0:
            raise SystemExit("recording: the first deploy failed:\n" + "\n".join(first.screen))

        logs = Terminal(["logs", "dev", "--follow"], cwd=ws, env=env)
        logs.wait_for(r" runtime: ready$")
        apply = Terminal(["apply", *plan, "--tag", SECOND], cwd=ws, env=env)
        deployment = apply.wait_for(r"^deployment (\S+) accepted$")[1].group(1)
        apply.wait_for(r"^\[3/4\] start: .* \.\.\.$")
        apply.ctrl_c()
        follow = Terminal(["follow", deployment, "--agent", agent.url], cwd=ws, env=env)
        follow.finish()
        replaced, _ = logs.wait_for(rf"replaced by deployment {deployment}")
        logs.wait_for(r"runtime: ready$", after=replaced)
        time.sleep(2)
        logs.ctrl_c()
        output.write_text(_markdown([*apply.screen, "", *follow.screen], logs.screen), "utf-8")
        print(f"wrote {output}")
    finally:
        for terminal in Terminal.started:  # a failed recording leaves no `logs --follow` polling a gone agent
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
        if agent is not None:
            agent.stop()
        lab.remove_containers(client, NAME)
        lab.remove_images(client, f"{registry.host}/{REPOSITORY}/")
        registry.stop()
        client.close()
        shutil.rmtree(root, ignore_errors=True)


def _markdown(deploying: list[str], following: list[str]) -> str:
    return (
        "# The daily CLI, recorded\n\n"
        "A real run (`python3 tools/cli_recording.py`), against the agent under gunicorn on loopback and real "
        "Docker, with the example runtime in a local registry: dev runs 1.0.0. In one terminal an operator "
        "deploys 1.1.0, presses Ctrl-C while the deploy runs, and re-attaches with `follow`; in another, "
        "`logs --follow` has been following dev the whole time. `DEPLOY_AGENT_URL`, `DEPLOY_AGENT_TOKEN` and the "
        "`RUNTIME_*` variables are set in the environment. Not a terminal, so no colour.\n\n"
        "## `apply`, Ctrl-C, `follow`\n\n```console\n" + "\n".join(deploying) + "\n```\n\n"
        "## `logs --follow`, in the other terminal, across the redeploy\n\n```console\n"
        + "\n".join(following)
        + "\n```\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else lab.REPO_ROOT / "docs" / "cli-recording.md")
