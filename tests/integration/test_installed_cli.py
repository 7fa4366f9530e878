"""The `deployplan` script as pip installs it: what it answers, and what its start loads."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

from realparts import Cli
from runner import __version__


def imported_modules(cli: Cli, *args: str) -> tuple[str, set[str]]:
    """Run the installed script with -X importtime and without `site` (so that only what the script itself loads
    is listed, not what this machine's .pth files load), its package found on PYTHONPATH instead."""
    venv = cli.bin_dir.parent
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    result = subprocess.run(
        [str(cli.bin_dir / "python"), "-S", "-X", "importtime", str(cli.bin_dir / "deployplan"), *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": purelib},
        cwd=Path(purelib).parent,
        check=True,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    return result.stdout, {line.rsplit("|", 1)[1].strip() for line in lines}


def test_version_answers_before_anything_a_command_needs_is_loaded(cli: Cli) -> None:
    stdout, modules = imported_modules(cli, "--version")

    assert stdout == f"deployplan {__version__}\n"
    assert "runner.cli.main" in modules  # the listing is the script's own
    # pip's entry-point wrapper imports `re`; `signal`, an IntEnum and `typing` load `enum`; a parser is argparse.
    # Each is a large part of a start that should cost little more than the interpreter's own.
    loaded = modules & {"re", "enum", "typing", "signal", "argparse", "importlib.util", "jsonschema", "jinja2", "yaml"}
    assert loaded == set()


def test_a_command_still_loads_what_it_needs(cli: Cli) -> None:
    """The other side of the lean start: a real command gets its parser and its module."""
    stdout, modules = imported_modules(cli, "apply", "--help")

    assert "usage: deployplan apply" in stdout
    assert {"argparse", "signal", "runner.cli.options"} <= modules
