"""The demo, as an operator runs it from the repository root: it ends well and leaves nothing behind."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from realparts import REPO


def _processes_with(markers: tuple[bytes, ...]) -> list[str]:
    """`pid cmdline` of every live process whose environment holds one of the markers."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(marker in environ for marker in markers):
            found.append(f"{proc.name} {cmdline}")
    return found


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind() -> None:
    # Everything the demo starts inherits this variable, except the agent, whose environment names its containers.
    marker = f"DEPLOYPLAN_DEMO_TEST={secrets.token_hex(8)}"
    key, value = marker.split("=")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_", "CF_ACCESS_"))}
    result = subprocess.run(
        [sys.executable, "tools/demo.py"],
        cwd=REPO,
        env={**base, key: value},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "\ndemo: done\n" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    # Each demo names its containers uniquely; these are the ones this run created.
    named = re.search(r"DEPLOY_AGENT_CONTAINER_DEV=(deployplan-demo-[0-9a-f]+)-dev", result.stdout)
    assert named, result.stdout
    prefix = named.group(1)
    names = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name={prefix}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [name for name in names if name.startswith(prefix)] == []
    assert _processes_with((marker.encode(), f"DEPLOY_AGENT_CONTAINER_DEV={prefix}-dev".encode())) == []
    log = re.search(r"its JSON log: (\S+)\)", result.stdout)
    assert log, result.stdout
    assert not Path(log.group(1)).parent.exists()
