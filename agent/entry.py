"""`deploy-agent`'s console script: names the missing `agent` extra before anything imports it.

The distribution also installs the `agent` package where only the CLI's dependencies are (the deploy job's
install, requirements/deploy.txt): there `deploy-agent` must say what to install, not fail on an import.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import NoReturn

# The `agent` extra of setup.cfg: each distribution and the module it provides (a unit test keeps them equal).
AGENT_EXTRA: dict[str, str] = {
    "docker": "docker",
    "Flask": "flask",
    "gunicorn": "gunicorn",
    "PyJWT": "jwt",
    "cryptography": "cryptography",
    "prometheus_client": "prometheus_client",
}


def missing_dependencies() -> list[str]:
    """The distributions of the `agent` extra whose module cannot be imported here."""
    return [dist for dist, module in AGENT_EXTRA.items() if importlib.util.find_spec(module) is None]


def main() -> NoReturn:
    """Refuse to start without the agent's dependencies (exit 2, as for a bad configuration), else start."""
    missing = missing_dependencies()
    if missing:
        print(
            f"deploy-agent: the agent's dependencies are not installed (missing: {', '.join(missing)}); "
            "this is the CLI-only install. On the server install the agent: pip install 'deployplan[agent]'",
            file=sys.stderr,
        )
        sys.exit(2)
    from agent.main import main as start

    start()
