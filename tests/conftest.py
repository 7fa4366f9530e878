"""Shared fixtures: the CLI installed non-editable and run as a subprocess, and a workspace to run it in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cli:
    """The installed `deployplan` console script, run the way an operator runs it."""

    bin_dir: Path

    def run(
        self, *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_", "CF_ACCESS_"))}
        return subprocess.run(
            [str(self.bin_dir / "deployplan"), *args],
            cwd=cwd,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """deployplan installed once, non-editable, into a fresh venv (its dependencies come from the system)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--disable-pip-version-check", str(REPO)],
        check=True,
        cwd=venv,
    )
    return Cli(bin_dir=venv / "bin")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A directory laid out like the repository (plans, variable table, workflows), away from the source tree."""
    ws = tmp_path / "ws"
    shutil.copytree(REPO / "plans", ws / "plans")
    (ws / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", ws / "infra" / "ENV_SCHEMA.md")
    if (REPO / ".github" / "workflows").is_dir():
        shutil.copytree(REPO / ".github" / "workflows", ws / ".github" / "workflows")
    return ws
