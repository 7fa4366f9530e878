"""The deploy job's install step (.github/workflows/deploy.yml), run outside GitHub: by the tests and the benchmarks.

The step is read from the workflow itself, so what is tested and measured is what the job runs: the CLI alone
from the hash-pinned lock (requirements/deploy.txt), then deployplan from the checkout without dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# What building deployplan from a checkout reads: the rest of the repository is not the package.
PACKAGE = ("setup.cfg", "pyproject.toml", "README.md", "runner", "agent", "schemas", "requirements")


def install_step(repo: Path = REPO) -> str:
    """The `run:` of deploy.yml's one step that installs with --require-hashes."""
    deploy = yaml.safe_load((repo / ".github" / "workflows" / "deploy.yml").read_text("utf-8"))
    runs = [step.get("run", "") for job in deploy["jobs"].values() for step in job.get("steps", [])]
    (install,) = [run for run in runs if "--require-hashes" in run]
    return str(install)


def copy_checkout(dest: Path, repo: Path = REPO) -> Path:
    """The files of the package, copied: pip builds in the source tree, and this one stays as it is."""
    dest.mkdir(parents=True)
    for name in PACKAGE:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, dest / name)
    return dest


def no_cache_environ(cache_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """pip with no cache: PIP_NO_CACHE_DIR (as --no-cache-dir, which turns off its HTTP cache too), and an empty
    cache directory of its own, which the caller can check stayed empty."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_CACHE_DIR": "1", "PIP_CACHE_DIR": str(cache_dir), "XDG_CACHE_HOME": str(cache_dir)}


def run_install_step(venv: Path, checkout: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The step under bash as GitHub runs it, with the venv's `python` first on PATH, in the checkout."""
    script = venv.parent / f"{venv.name}-install.sh"
    script.write_text(install_step(), "utf-8")
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=checkout,
        env={**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
