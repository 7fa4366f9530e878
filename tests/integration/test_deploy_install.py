"""The deploy job's install, run for real: deploy.yml's install step in a fresh venv, from PyPI, hash-checked.

What it leaves is the CLI alone: exactly the lock's packages and deployplan, `lint`, `dry-run`, `check` and
`apply` work, and the agent's dependencies are not there (importing them fails; `deploy-agent` says what to install).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import deployjob
import deploylock
from realparts import PREFIX, REPO, RUNTIME_ENV, AgentFactory, Cli, Images

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A fresh venv (pip, as setup-python's Python has) where deploy.yml's install step ran, in a copy of the
    checkout, with no pip cache; the venv's python is the step's `python`."""
    root = tmp_path_factory.mktemp("lean")
    venv, cache = root / "venv", root / "pip-cache"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = deployjob.run_install_step(
        venv, deployjob.copy_checkout(root / "checkout"), deployjob.no_cache_environ(cache)
    )
    assert result.returncode == 0, f"deploy.yml's install step failed:\n{result.stdout}{result.stderr}"
    assert not cache.exists() or not any(cache.iterdir()), "pip wrote to its cache"
    return Cli(bin_dir=venv / "bin")


def python(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli.bin_dir / "python"), *args], cwd=cli.bin_dir.parent, capture_output=True, text=True, timeout=60
    )


def distributions(cli: Cli) -> dict[str, list[Requirement]]:
    """The venv's distributions and their requirements, read from its site-packages' metadata."""
    (site,) = (cli.bin_dir.parent / "lib").glob("python3*/site-packages")
    found = importlib.metadata.distributions(path=[str(site)])
    return {canonicalize_name(d.metadata["Name"]): [Requirement(r) for r in d.requires or []] for d in found}


def test_the_lean_venv_holds_the_lock_and_deployplan_and_nothing_more(lean: Cli) -> None:
    locked = {pin.name for pin in deploylock.parse_lock((REPO / deploylock.DEPLOY_LOCK).read_text()).pins}
    installed = distributions(lean)

    # The venv's own pip, and setuptools from requirements/build.txt (it built deployplan), are not the CLI's.
    assert set(installed) - {"pip", "setuptools"} == locked | {"deployplan"}
    # The lock is exactly the closure of deployplan's requirements, by the metadata of the locked versions.
    in_the_venv = {name: [str(r) for r in requirements] for name, requirements in installed.items()}
    needed = deploylock.closure([Requirement("deployplan")], lambda name: in_the_venv.get(canonicalize_name(name)))
    assert needed == locked | {"deployplan"}
    check = python(lean, "-m", "pip", "check")
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("module", ["flask", "gunicorn", "docker", "jwt", "cryptography", "prometheus_client"])
def test_the_agent_dependencies_are_not_there(lean: Cli, module: str) -> None:
    result = python(lean, "-c", f"import {module}")

    assert result.returncode == 1
    assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr


def test_the_cli_lints_and_dry_runs(lean: Cli, workspace: Path) -> None:
    assert lean.run("--version", cwd=workspace).stdout.startswith("deployplan ")
    linted = lean.run("lint", cwd=REPO)
    assert (linted.returncode, linted.stdout, linted.stderr) == (
        0,
        "1 plan, infra/ENV_SCHEMA.md and .github/workflows/deploy.yml: no problems\n",
        "",
    )
    dry = lean.run(
        "dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader",
        cwd=workspace, env=RUNTIME_ENV,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "nothing was touched (dry run)" in dry.stdout


def test_deploy_agent_says_to_install_the_agent_extra(lean: Cli, tmp_path: Path) -> None:
    result = subprocess.run([str(lean.bin_dir / "deploy-agent")], cwd=tmp_path, capture_output=True, text=True)

    assert result.returncode == 2
    assert "pip install 'deployplan[agent]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_lean_cli_applies_through_a_real_agent(
    lean: Cli, make_agent: AgentFactory, images: Images, workspace: Path, docker_client: docker.DockerClient
) -> None:
    registry, path = images.repository.split("/", 1)
    plan = workspace / "plans" / "runtime.yaml"
    plan.write_text(plan.read_text().replace("ghcr.io/{{ repository }}/runtime:", f"{registry}/{{{{ repository }}}}:"))
    agent = make_agent()
    env = {**RUNTIME_ENV, "DEPLOY_AGENT_TOKEN": agent.token}

    # deploy.yml's step before apply, from the same lean venv: every check, the agent's and the registry's too.
    checked = lean.run(
        "check", "--env", "dev", "--tag", "1.0.0", "--repository", path, "--agent", agent.url, cwd=workspace, env=env
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "\n0 FAIL, 0 warn, " in checked.stdout and "registry: the registry has" in checked.stdout

    result = lean.run(
        "apply", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.0", "--repository", path, "--agent", agent.url,
        cwd=workspace, env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deployed and verified: dev runs {images.ref('1.0.0')}" in result.stdout
    container = docker_client.containers.get(agent.containers["dev"])
    assert (container.status, container.name.startswith(PREFIX)) == ("running", True)
