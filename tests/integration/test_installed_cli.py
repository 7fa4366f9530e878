"""The `deployplan` console script as pip installs it: what it answers, and what its start loads."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

from realparts import Cli
from runner import __version__

# What pip's console-script wrapper runs: it imports `re` itself before it calls main().
ENTRY = "from runner.cli.main import main; main()"


def imported_modules(cli: Cli, *args: str) -> tuple[str, set[str]]:
    """Run the entry point of the installed package with -X importtime and without `site` (so that only what our
    code loads is listed, not what this machine's .pth files or pip's wrapper load), the package on PYTHONPATH."""
    venv = cli.bin_dir.parent
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    result = subprocess.run(
        [str(cli.bin_dir / "python"), "-S", "-X", "importtime", "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": purelib},
        cwd=Path(purelib).parent,
        check=True,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    return result.stdout, {line.rsplit("|", 1)[1].strip() for line in lines}


def test_the_console_script_answers_its_version(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("--version", cwd=tmp_path)

    assert (result.returncode, result.stdout, result.stderr) == (0, f"deployplan {__version__}\n", "")


def test_version_answers_before_anything_a_command_needs_is_loaded(cli: Cli) -> None:
    stdout, modules = imported_modules(cli, "--version")

    assert stdout == f"deployplan {__version__}\n"
    assert "runner.cli.main" in modules  # the listing is our code's own
    # What the commands need (a parser, the plan's libraries, the HTTP client) is loaded by the command that runs.
    loaded = modules & {"argparse", "typing", "jsonschema", "jinja2", "yaml", "http.client", "runner.cli.options"}
    assert loaded == set()


def test_a_command_still_loads_what_it_needs(cli: Cli) -> None:
    """The other side of the lean start: a real command gets its parser and its module."""
    stdout, modules = imported_modules(cli, "apply", "--help")

    assert "usage: deployplan apply" in stdout
    assert {"argparse", "runner.cli.options"} <= modules
