"""Two tiers: tests/unit needs no Docker and runs in seconds (`make unit`); tests/integration talks to the real
parts (Docker Engine, registry, the agent under gunicorn, the installed CLI) and is marked `integration`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A directory laid out like the repository (plans, variable table, workflows), away from the source tree."""
    ws = tmp_path / "ws"
    shutil.copytree(REPO / "plans", ws / "plans")
    (ws / "infra").mkdir()
    shutil.copy(REPO / "infra" / "ENV_SCHEMA.md", ws / "infra" / "ENV_SCHEMA.md")
    shutil.copytree(REPO / ".github" / "workflows", ws / ".github" / "workflows")
    return ws
