"""The integration tier's fixtures (defined in realparts.py, which the tests import their helpers from)."""

from realparts import (  # noqa: F401 - pytest finds fixtures by their names in this module
    agent,
    canary_sweep,
    cli,
    docker_client,
    images,
    make_agent,
    module_agent,
    nothing_left_behind,
    registry,
)
