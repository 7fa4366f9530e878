"""The CLI without the agent's dependencies (the deploy job's install), and `deploy-agent` where they are missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

import deploylock
from agent.entry import AGENT_EXTRA

REPO = Path(__file__).resolve().parents[2]
# Run in a child process (this one has the agent's dependencies loaded already), with the agent-only packages
# hidden as if not installed: each module of runner/ imported (but `python -m runner` itself), then lint and a
# local dry-run in-process. Prints the exit codes and which hidden packages something tried to import.
PROBE = """
import importlib, io, json, pkgutil, sys
HIDDEN = set(sys.argv[1].split(",")) - {name.split(".")[0] for name in sys.modules}
tried = set()
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            tried.add(name.split(".")[0])
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hide())
import runner
for found in pkgutil.walk_packages(runner.__path__, "runner."):
    if not found.name.endswith(".__main__"):
        importlib.import_module(found.name)
from runner.cli.console import Console
from runner.cli.main import run
environ = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "x" * 24}
codes = []
for argv in (["lint"], ["dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "a/b"]):
    codes.append(int(run(argv, Console(out=io.StringIO(), err=sys.stderr, github=False, environ=environ))))
print(json.dumps({"codes": codes, "tried": sorted(tried), "loaded": "jsonschema" in sys.modules}))
"""
# What the CLI's code itself must never ask for. (A library may try an optional one: jsonschema looks for idna,
# a dependency of requests, for format checks the plans do not use.)
AGENT_PACKAGES = {
    "agent",
    "docker",
    "requests",
    "flask",
    "werkzeug",
    "gunicorn",
    "jwt",
    "cryptography",
    "prometheus_client",
}


def test_the_cli_runs_without_the_agent_dependencies_and_never_asks_for_them() -> None:
    cli, agent = deploylock.declared((REPO / "setup.cfg").read_text())
    hidden = {*(name.replace("-", "_") for name in deploylock.agent_only(cli, agent)), *AGENT_PACKAGES}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(sorted(hidden))], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert (report["codes"], report["loaded"]) == ([0, 0], True), result.stderr
    assert set(report["tried"]) & AGENT_PACKAGES == set()


def test_the_entry_point_knows_the_agent_extra_of_setup_cfg() -> None:
    _, agent = deploylock.declared((REPO / "setup.cfg").read_text())
    assert {canonicalize_name(r.name) for r in agent} == {canonicalize_name(name) for name in AGENT_EXTRA}


def test_deploy_agent_without_the_agent_extra_says_what_to_install() -> None:
    """`python -S`: no site-packages at all, only the checkout, as where only the CLI was installed and none of
    the agent's dependencies are (tests/integration/test_deploy_install.py runs the real console script there)."""
    entry = f"import sys; sys.path.insert(0, {str(REPO)!r}); from agent.entry import main; main()"
    result = subprocess.run([sys.executable, "-S", "-c", entry], capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "the agent's dependencies are not installed (missing: docker, Flask, gunicorn, PyJWT" in result.stderr
    assert "pip install 'deployplan[agent]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_the_agent_extra_nothing_is_missing() -> None:
    from agent.entry import missing_dependencies

    assert missing_dependencies() == []
