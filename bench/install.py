"""Benchmark: the deploy job's install against installing everything, each in a fresh venv, from PyPI, no cache.

(a) the deploy job: deploy.yml's install step itself (the CLI alone from requirements/deploy.txt with
    --require-hashes, wheels only, then this checkout --no-deps, built by the pinned setuptools of
    requirements/build.txt);
(b) what every deploy job installed before: `python -m pip install --no-cache-dir '.[agent]'`.

Both run in a copy of this checkout, in a venv made just before (not timed), with PIP_NO_CACHE_DIR=1 (as
--no-cache-dir: pip's wheel cache and its HTTP cache both off) and PIP_CACHE_DIR pointed at an empty directory
that must still be empty after. Runs alternate (b, a, b, a...), RUNS rounds; medians. Sizes are the venv's
site-packages in MB (10^6 bytes), packages its distributions; both less the fresh venv's own (pip, setuptools).
Then the lean venv is shown to work: `deployplan --version`, `lint`, a local `dry-run`; importing flask,
gunicorn and docker fails there, and `deploy-agent` says to install `deployplan[agent]`.

Target (ratio in the same run): (a) <= 0.5x (b), in seconds.

Run: python bench/install.py   (needs PyPI)
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, Target, deployjob, fmt, machine, median, report_targets, table

RUNS = 5
EVERYTHING = "python -m pip install --disable-pip-version-check --no-cache-dir '.[agent]'"
RUNTIME_ENV = {"RUNTIME_ENV": "dev", "RUNTIME_LOG_LEVEL": "info", "RUNTIME_API_TOKEN": "bench-" + "x" * 24}


@dataclass(frozen=True)
class Install:
    """One install into a fresh venv: wall seconds, and what it added to site-packages."""

    seconds: float
    megabytes: float
    packages: list[str]


def site_packages(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def contents(venv: Path) -> tuple[float, set[str]]:
    """MB of the venv's site-packages, and its distributions as name==version."""
    site = site_packages(venv)
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    found = importlib.metadata.distributions(path=[str(site)])
    return size / 1e6, {f"{d.metadata['Name']}=={d.version}" for d in found}


def install(root: Path, name: str, script: str) -> Install:
    """A fresh venv, then `script` under bash in a fresh copy of the checkout, timed; no pip cache."""
    venv, cache = root / f"venv-{name}", root / f"cache-{name}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    checkout = deployjob.copy_checkout(root / f"checkout-{name}")
    base_mb, base = contents(venv)
    (root / f"{name}.sh").write_text(script)
    env = deployjob.no_cache_environ(cache)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(root / f"{name}.sh")],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{name}: the install failed:\n{result.stdout}{result.stderr}")
    if cache.exists() and any(cache.rglob("*")):
        raise RuntimeError(f"{name}: pip wrote to its cache: {sorted(cache.rglob('*'))[:5]}")
    megabytes, dists = contents(venv)
    base_names = {d.split("==")[0] for d in base}
    return Install(seconds, megabytes - base_mb, sorted(d for d in dists if d.split("==")[0] not in base_names))


def proofs(venv: Path) -> list[tuple[str, bool, str]]:
    """What the lean venv does: the CLI works, the agent's dependencies are not there."""
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "deployplan")
    dry_run = [cli, "dry-run", "plans/runtime.yaml", "--env", "dev", "--tag", "1.0.3", "--repository", "acme/trader"]
    checks: list[tuple[str, list[str], int, str]] = [
        ("deployplan --version", [cli, "--version"], 0, "deployplan "),
        ("deployplan lint (this checkout)", [cli, "lint"], 0, ""),
        ("deployplan dry-run (local)", dry_run, 0, "nothing was touched (dry run)"),
        *((f"import {m}", [python, "-c", f"import {m}"], 1, "ModuleNotFoundError") for m in ("flask", "gunicorn")),
        ("import docker", [python, "-c", "import docker"], 1, "ModuleNotFoundError"),
        ("deploy-agent", [str(venv / "bin" / "deploy-agent")], 2, "pip install 'deployplan[agent]'"),
    ]
    out = []
    for label, argv, code, says in checks:
        env = {"PATH": "/usr/bin:/bin", **RUNTIME_ENV}
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        text = result.stdout + result.stderr
        ok = result.returncode == code and says in text
        out.append((label, ok, f"exit {result.returncode}: {text.strip().splitlines()[-1] if text.strip() else ''}"))
    return out


def main() -> int:
    print(f"machine: {machine()}")
    step = deployjob.install_step()
    print(f"(a) deploy.yml's install step:\n{step}(b) {EVERYTHING}")
    runs: dict[str, list[Install]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="deployplan-bench-install-") as tmp:
        for round_ in range(RUNS):
            for name, script in (("b", EVERYTHING), ("a", step)):
                root = Path(tmp) / f"{round_}"
                root.mkdir(exist_ok=True)
                runs[name].append(install(root, name, script))
                print(f"  round {round_ + 1} ({name}): {runs[name][-1].seconds:.2f} s", flush=True)
                if round_ < RUNS - 1 or name == "b":
                    shutil.rmtree(root / f"venv-{name}")
        lean, full = runs["a"][-1], runs["b"][-1]
        seconds = {name: median([r.seconds for r in installs]) for name, installs in runs.items()}
        print(f"\nmedian of {RUNS} fresh, uncached installs (the last run's site-packages)")
        rows = [
            ("(a) deploy job: lock, then --no-deps", seconds["a"], lean),
            ("(b) pip install '.[agent]'", seconds["b"], full),
        ]
        ratios = ["ratio (a)/(b)", f"{seconds['a'] / seconds['b']:.2f}x", f"{lean.megabytes / full.megabytes:.2f}x"]
        ratios.append(f"{len(lean.packages) / len(full.packages):.2f}x")
        table(
            ["install", "seconds", "MB", "packages"],
            [[label, fmt(s, "s"), f"{i.megabytes:.1f}", str(len(i.packages))] for label, s, i in rows] + [ratios],
        )
        print(f"(a) installs: {', '.join(lean.packages)}")
        print(f"(b) installs: {', '.join(full.packages)}")
        print("\nthe lean venv (a)")
        checks = proofs(Path(tmp) / f"{RUNS - 1}" / "venv-a")
        for label, ok, detail in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
    baseline = "pip install '.[agent]'"
    target = Target(
        f"deploy job install vs {baseline}", seconds["a"], "s", 0.5, seconds["b"], baseline, per_baseline=True
    )
    verdict = report_targets([target])
    return verdict if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
