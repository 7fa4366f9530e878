"""The runtime's server-owned mounts: parsed, and refused when they would hand it the host (the Docker socket,
a folder holding it, the agent's state directory)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# Where the Docker socket lives when DOCKER_HOST does not say: mounting it (or a folder holding it) into the
# runtime would hand the runtime root on this host.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


@dataclass(frozen=True)
class Mount:
    """One server-owned bind mount."""

    source: str
    target: str
    mode: Literal["rw", "ro"]

    def bind(self) -> str:
        return f"{self.source}:{self.target}:{self.mode}"


def protected_paths(state_dir: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Host paths no runtime volume may mount, by what they are: the Docker socket(s) and the state directory."""
    paths = {os.path.realpath(p): "the Docker socket" for p in DOCKER_SOCKETS}
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths[os.path.realpath(host.removeprefix("unix://"))] = "the Docker socket"
    if state_dir.startswith("/"):
        paths[os.path.realpath(state_dir)] = "the agent's state directory (DEPLOY_AGENT_STATE_DIR)"
    return paths


def parse_volumes(name: str, value: str, problems: list[str], protected: dict[str, str]) -> tuple[Mount, ...]:
    if not value:
        problems.append(f"{name} is not set (comma-separated HOST:CONTAINER[:ro|rw] mounts, or 'none')")
        return ()
    if value == "none":
        return ()
    mounts = []
    for item in value.split(","):
        parts = item.strip().split(":")
        mode = parts[2] if len(parts) == 3 else "rw"
        if len(parts) not in (2, 3) or not all(p.startswith("/") for p in parts[:2]) or mode not in ("rw", "ro"):
            problems.append(f"{name}: {item.strip()!r} is not an absolute HOST:CONTAINER[:ro|rw] mount")
            continue
        source = os.path.realpath(parts[0])
        clash = next((what for path, what in protected.items() if _overlaps(source, path)), None)
        if clash is not None:
            problems.append(f"{name}: {item.strip()!r} would mount {clash} into the runtime; mount another folder")
            continue
        mounts.append(Mount(source=parts[0], target=parts[1], mode=mode))  # type: ignore[arg-type]
    return tuple(mounts)


def _overlaps(source: str, protected: str) -> bool:
    """A mount of `source` reaches `protected`: it is that path, a folder holding it, or a path inside it."""
    holds = source == "/" or protected == source or protected.startswith(source + "/")
    return holds or source.startswith(protected + "/")


def missing_sources(name: str, mounts: tuple[Mount, ...]) -> list[str]:
    """One line per bind source that is not there (Docker must never create one: it would make it root's, 0755,
    where the runtime cannot write), or that this user cannot even look at; `name` is the variable that owns them."""
    return [f"{name}: {found}" for mount in mounts if isinstance(found := source_state(mount), str)]


def source_state(mount: Mount) -> os.stat_result | str:
    """The bind source's stat (one look), or what is wrong with it and what to do."""
    try:
        return os.stat(mount.source)
    except FileNotFoundError:
        return (
            f"the mount source {mount.source} does not exist; create it, owned by the runtime's user "
            f"(install -d -m 0750 -o UID -g GID {mount.source})"
        )
    except OSError as e:
        return (
            f"the mount source {mount.source} cannot be checked ({e.strerror}); let the agent's user look into the "
            "folders that hold it"
        )
