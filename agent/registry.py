"""What the registry says about a tag, asked through the Docker Engine's distribution endpoint with the agent's own
registry credentials: nothing is pulled, nothing is written. A dry run shows it, so a missing tag or a stale
credential is found before anyone approves a deploy, not by its pull."""

from __future__ import annotations

from typing import Any

import docker.errors
import requests

from agent.config import Config
from agent.dockerio import DOCKER_ERRORS, Connect
from runner.core.secrets import Masker, Secret, reveal
from runner.core.text import shorten

# The dry run answers synchronously and holds a request thread meanwhile: a registry that stalls is answered as
# one that cannot be reached after this long (a registry that answers at all does so in a second or two).
REGISTRY_TIMEOUT = 10
REASON_CHARS = 300


def registry_auth(config: Config) -> dict[str, str | Secret] | None:
    """The agent's registry credentials, as the pull and the distribution endpoint take them (None: none set)."""
    if config.registry_username and config.registry_password:
        return {"username": config.registry_username, "password": config.registry_password}
    return None


def ask_registry(connect: Connect, image: str, *, auth: dict[str, str | Secret] | None) -> dict[str, Any]:
    """`{"found": true, "digest": "sha256:..."}`, or `{"found": false, "reason": "..."}` (the registry's answer,
    or why it could not be asked: Docker unreachable, the registry unreachable)."""
    revealed = {k: reveal(v) for k, v in auth.items()} if auth else None
    try:
        with connect(timeout=REGISTRY_TIMEOUT) as client:
            answer = client.inspect_distribution(image, auth_config=revealed)
    except docker.errors.APIError as e:
        said = str(e.explanation or e).strip()
        return {"found": False, "reason": _masked(f"the registry does not give {image}: {said}", revealed)}
    except requests.Timeout:
        reason = f"the registry did not answer about {image} within {REGISTRY_TIMEOUT} s (asked through Docker)"
        return {"found": False, "reason": reason}
    except DOCKER_ERRORS as e:
        reason = f"Docker is unreachable, so the registry could not be asked about {image}: {e}"
        return {"found": False, "reason": _masked(reason, revealed)}
    digest = (answer.get("Descriptor") or {}).get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return {"found": False, "reason": f"the registry answered for {image} without a sha256 digest"}
    return {"found": True, "digest": digest}


def _masked(reason: str, auth: dict[str, str] | None) -> str:
    """The engine's words, bounded, and never the password (should a registry ever echo it, in any form the
    masker knows)."""
    return shorten(Masker([auth["password"]] if auth and auth.get("password") else []).mask(reason), REASON_CHARS)


def not_asked(image: str, *, slots: int, threads: int) -> dict[str, Any]:
    """The answer of a dry run that found this worker's registry lookups all taken (`RegistryLookups`): the
    registry was not asked, so whether it has the tag is unknown. `found` stays false, as for any tag not
    confirmed, and `busy` tells a client to ask again rather than push the tag."""
    reason = (
        f"not asked about {image}: the agent is busy asking the registry for other dry runs (at most {slots} at "
        f"once in each worker, a quarter of its {threads} threads); ask again in a few seconds"
    )
    return {"found": False, "busy": True, "reason": reason}
