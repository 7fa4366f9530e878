"""Benchmark: `deployplan lint` over 500 valid plans must take under 2 s.

Generates 500 variations of plans/runtime.yaml (names, timeouts) and a copy of
infra/ENV_SCHEMA.md into a temporary workspace, then times `deployplan lint
plans` there as a subprocess, median of 5 runs, against `python -c pass`
measured in the same run (the interpreter's own start-up, for scale).

Run: python bench/lint.py
"""

from __future__ import annotations

import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLANS = 500
RUNS = 5
TARGET_SECONDS = 2.0
VARIED = {
    "plan: runtime\n": "plan: $plan\n",
    "    timeout: 600\n": "    timeout: $pull\n",
    "stop_timeout: 30\n": "stop_timeout: $stop\n",
    "Start the new runtime\n": "$start\n",
    "    timeout: 60\n": "    timeout: $verify\n",
    "stable_for: 5\n": "stable_for: $stable\n",
}


def deployplan() -> list[str]:
    """The installed `deployplan` script next to this interpreter, else the package run as a module."""
    script = Path(sys.executable).with_name("deployplan")
    found = str(script) if script.exists() else shutil.which("deployplan")
    return [found] if found else [sys.executable, "-m", "runner"]


def write_workspace(root: Path) -> None:
    """500 valid plans, each a variation of plans/runtime.yaml, and the variable table."""
    template = (REPO / "plans" / "runtime.yaml").read_text("utf-8")
    # Placeholders first, values after, so that no value is mistaken for another literal.
    for literal, placeholder in VARIED.items():
        if template.count(literal) != 1:
            sys.exit(f"plans/runtime.yaml changed: {literal!r} is no longer there exactly once")
        template = template.replace(literal, placeholder)
    plans = root / "plans"
    plans.mkdir()
    for n in range(PLANS):
        verify = 60 + n % 541
        text = string.Template(template).substitute(
            plan=f"runtime-{n}",
            pull=1 + n * 7 % 3600,
            stop=n % 301,
            start=f"Start the new runtime, variation {n}",
            verify=verify,
            stable=n % min(301, verify + 1),
        )
        (plans / f"plan-{n:03}.yaml").write_text(text, "utf-8")
    (root / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", root / "infra" / "ENV_SCHEMA.md")


def median_seconds(argv: list[str], *, cwd: Path) -> float:
    """The median wall time of RUNS runs; every run must succeed."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="deployplan-bench-") as tmp:
        root = Path(tmp)
        write_workspace(root)
        baseline = median_seconds([sys.executable, "-c", "pass"], cwd=root)
        lint = median_seconds([*deployplan(), "lint", "plans"], cwd=root)
    verdict = "PASS" if lint < TARGET_SECONDS else "FAIL"
    print(f"python -c pass:            {baseline:.3f} s (median of {RUNS})")
    print(f"deployplan lint {PLANS} plans: {lint:.3f} s (median of {RUNS})")
    print(f"ratio:                     {lint / baseline:.1f}x the interpreter's start-up")
    print(f"target:                    {PLANS} plans in under {TARGET_SECONDS:.0f} s: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
