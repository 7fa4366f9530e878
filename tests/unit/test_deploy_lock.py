"""The deploy job's locks (requirements/) against setup.cfg and pyproject.toml: tools/deploylock.py, as CI runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import deploylock

REPO = Path(__file__).resolve().parents[2]
HASH = "--hash=sha256:" + "ab" * 32
A_PIN = "{name}=={version} \\\n    " + HASH + "\n    # via {via}\n"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files the check reads, copied: each case below changes one thing in them."""
    for name in ("setup.cfg", "pyproject.toml", "requirements"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def test_the_locks_of_the_repository_satisfy_what_they_lock() -> None:
    assert deploylock.check_repository() == []


def test_the_check_runs_as_a_script_and_exits_0() -> None:
    result = subprocess.run([sys.executable, str(REPO / "tools" / "deploylock.py")], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_deploy_lock_pins_the_cli_alone_with_hashes() -> None:
    lock = deploylock.parse_lock((REPO / deploylock.DEPLOY_LOCK).read_text())
    names = {pin.name for pin in lock.pins}
    assert {"pyyaml", "jsonschema", "jinja2"} <= names
    assert names.isdisjoint({"flask", "werkzeug", "gunicorn", "docker", "requests", "pyjwt", "cryptography"})
    assert all(pin.hashes and re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", pin.version) for pin in lock.pins)


def _replace(path: str, old: str, new: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        text = (root / path).read_text()
        changed = re.sub(old, new, text, count=1, flags=re.MULTILINE)
        assert changed != text, f"{old!r} not found in {path}"
        (root / path).write_text(changed)

    return change


def _append(path: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        with (root / path).open("a") as f:
            f.write(text)

    return change


DEPLOY = deploylock.DEPLOY_LOCK
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "an agent package pinned": (
        _append(DEPLOY, A_PIN.format(name="flask", version="3.1.3", via="deployplan (setup.cfg)")),
        "requirements/deploy.txt:{line}: flask==3.1.3: only the agent needs it",
    ),
    "what an agent package brings along": (
        _append(DEPLOY, A_PIN.format(name="werkzeug", version="3.1.9", via="jinja2")),
        "werkzeug==3.1.9: only the agent needs it",
    ),
    "a pin without hashes": (
        _replace(DEPLOY, r"^(pyyaml==\S+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n"),
        "pyyaml==6.0.4: no --hash (pip install --require-hashes refuses it)",
    ),
    "a pin outside setup.cfg's range": (
        _replace(DEPLOY, r"^jinja2==\S+", "jinja2==3.0.3"),
        "jinja2==3.0.3 is outside Jinja2>=3.1",
    ),
    "a CLI dependency not pinned": (
        _replace("setup.cfg", r"^    Jinja2>=3.1$", "    Jinja2>=3.1\n    rich>=13"),
        "requirements/deploy.txt: rich>=13 is not pinned; regenerate: uv pip compile setup.cfg",
    ),
    "more than the closure": (
        _append(DEPLOY, A_PIN.format(name="six", version="1.16.0", via="nothing-in-the-lock")),
        "six is not needed by deployplan (setup.cfg) (via nothing-in-the-lock)",
    ),
    "a pin that claims to be required": (
        _append(DEPLOY, A_PIN.format(name="six", version="1.16.0", via="deployplan (setup.cfg)")),
        "six says it is there for deployplan (setup.cfg), which does not require it",
    ),
    "a line that is not a pin": (
        _append(DEPLOY, "--extra-index-url https://example.invalid/simple\n"),
        "is not a pin (name==version)",
    ),
    "a range instead of a pin": (
        _replace(DEPLOY, r"^pyyaml==", "pyyaml>="),
        "'pyyaml>=6.0.4' is not a pin (name==version)",
    ),
    "a hash that is not sha256": (
        _replace(DEPLOY, r"--hash=sha256:[0-9a-f]{64}", "--hash=md5:0123456789abcdef0123456789abcdef"),
        "not a sha256 hash: --hash=md5:",
    ),
    "a header without the command": (
        _replace(DEPLOY, r"^#    uv pip compile .*$", "#    pip freeze"),
        "the header does not name the command that makes it: " + deploylock.DEPLOY_COMMAND,
    ),
    "the build lock behind pyproject.toml": (
        _replace("pyproject.toml", r'"setuptools>=64"', '"setuptools>=64", "wheel>=0.40"'),
        "requirements/build.txt: wheel>=0.40 is not pinned",
    ),
    "the build lock outside pyproject.toml's range": (
        _replace("pyproject.toml", r'"setuptools>=64"', '"setuptools>=64,<70"'),
        "is outside setuptools<70,>=64",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_check_fails_and_names_the_problem(checkout: Path, case: str) -> None:
    change, says = CASES[case]
    change(checkout)
    lock_lines = (checkout / DEPLOY).read_text().splitlines()
    says = says.format(line=len(lock_lines) - 2)  # an appended pin: its line, its hash, its via

    problems = deploylock.check_repository(checkout)

    assert any(says in problem for problem in problems), problems


def test_a_missing_lock_is_a_problem_not_a_crash(checkout: Path) -> None:
    (checkout / DEPLOY).unlink()
    assert deploylock.check_repository(checkout) == [
        f"cannot read the locks or what they lock: [Errno 2] No such file or directory: '{checkout / DEPLOY}'"
    ]
