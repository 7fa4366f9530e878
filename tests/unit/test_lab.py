"""tools/lab.py: the test venv inside a virtualenv, and ports kept within DEPLOYPLAN_TEST_PORTS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lab

TOOLS = Path(lab.__file__).resolve().parent


def test_free_port_keeps_within_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYPLAN_TEST_PORTS", "41000-41019")
    assert all(41000 <= lab.free_port() <= 41019 for _ in range(5))


@pytest.mark.parametrize("text", ["41000", "41000-", "80-90", "42000-41000", "41000-70000", "a-b"])
def test_a_bad_port_range_is_refused_by_name(text: str) -> None:
    with pytest.raises(lab.LabError, match="DEPLOYPLAN_TEST_PORTS"):
        lab.port_range(text)


def test_a_venv_made_inside_a_virtualenv_sees_its_packages(tmp_path: Path) -> None:
    """Found as a new user: `make test` in the README's venv failed to start the agent (no gunicorn): the test
    venv, made with --system-site-packages from inside a virtualenv, saw the base interpreter's packages only."""
    outer = tmp_path / "outer"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(outer)], check=True)
    purelib = subprocess.run(
        [str(outer / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "only_in_the_outer_venv.py").write_text("HERE = True\n")
    make = (
        f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import lab, pathlib; "
        f"print(lab.make_venv(pathlib.Path({str(tmp_path / 'inner')!r})))"
    )
    inner = subprocess.run([str(outer / "bin" / "python"), "-c", make], check=True, capture_output=True, text=True)
    found = subprocess.run(
        [inner.stdout.strip(), "-c", "import only_in_the_outer_venv"], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
