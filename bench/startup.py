"""Benchmark: how fast the CLI starts, as an operator installs it (the console script of a fresh venv).

`deployplan --version` against `python -c pass` of the same venv (the interpreter's own start, the floor), and
`python -c "import re"` (what pip's console-script wrapper imports before any code of ours runs). Then, for
`--version`, `render` and `apply`: what each imports, from `python -X importtime`, the biggest first. Runs
alternate, RUNS_START rounds; medians.

Target (ratio in the same run): `deployplan --version` <= 1.5x `python -c pass`.

Run: python bench/startup.py   (needs PyPI or a pip cache for the venv's dependencies)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, Target, fmt, installed_venv, machine, median, report_targets, table

RUNS_START = 40


def wall(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def imports(python: Path, argv: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Total import time (ms) of `python -X importtime *argv`, and the top-level imports by cumulative time."""
    err = subprocess.run([str(python), "-X", "importtime", *argv], cwd=cwd, capture_output=True, text=True).stderr
    top: list[tuple[float, str]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if cumulative.isdigit() and not line.split("|")[2].startswith("  "):  # top level: no indent
            top.append((int(cumulative) / 1000, name))
    return sum(ms for ms, _ in top), sorted(top, reverse=True)


def main() -> int:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="deployplan-bench-startup-") as tmp:
        root = Path(tmp)
        venv = installed_venv(root)
        python, script = venv / "bin" / "python", venv / "bin" / "deployplan"
        (root / "plans").mkdir()
        (root / "plans" / "runtime.yaml").write_text((REPO / "plans" / "runtime.yaml").read_text())
        contenders = {
            "python -c pass": [str(python), "-c", "pass"],
            'python -c "import re"': [str(python), "-c", "import re"],
            "deployplan --version": [str(script), "--version"],
            "deployplan render (whole command)": [
                str(script),
                "render",
                "plans/runtime.yaml",
                "--env",
                "dev",
                "--tag",
                "1.0.0",
                "--repository",
                "a/b",
            ],
            "deployplan apply --help": [str(script), "apply", "--help"],
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(RUNS_START + 1):
            for name, argv in contenders.items():
                seconds = wall(argv, root)
                if round_:
                    samples[name].append(seconds)
        medians = {name: median(values) for name, values in samples.items()}
        floor = medians["python -c pass"]
        print(f"\nwall time, median of {RUNS_START}")
        table(
            ["command", "median", "vs python -c pass"],
            [[name, fmt(m * 1000, "ms"), f"{m / floor:.2f}x"] for name, m in medians.items()],
        )
        print("\nwhat each command imports (python -X importtime; top-level modules, cumulative ms, biggest first)")
        for label, argv in (
            ("--version", [str(script), "--version"]),
            ("render", ["-c", "import runner.cli.main, runner.cli.options, runner.cli.local"]),
            ("apply", ["-c", "import runner.cli.main, runner.cli.options, runner.cli.deploy"]),
        ):
            total, top = imports(python, argv, root)
            shown = ", ".join(f"{name} {ms:.1f}" for ms, name in top[:8])
            print(f"  {label}: {total:.1f} ms: {shown}")
        version = medians["deployplan --version"]
        return report_targets(
            [
                Target(
                    "deployplan --version start",
                    version * 1000,
                    "ms",
                    1.5,
                    floor * 1000,
                    "python -c pass",
                    per_baseline=True,
                )
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
