"""The unit tier: the CLI run in-process, the agent's app with a recording Docker, plain data in and out."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.cli.console import Console
from runner.cli.main import run


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """`deployplan` through its `run(argv, console)` entry, in this process: what the console script does, minus
    the interpreter start."""

    def run(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
        environ = dict(env or {})
        out, err = io.StringIO(), io.StringIO()
        console = Console(out=out, err=err, github=environ.get("GITHUB_ACTIONS") == "true", environ=environ)
        with contextlib.chdir(cwd):
            code = run(list(args), console)
        return Result(int(code), out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> InProcessCli:
    return InProcessCli()
