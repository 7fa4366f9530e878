"""One small recording stand-in for the Docker Engine API client, for the unit tier, where no engine runs.

It knows containers by name and answers the reads the agent makes (ping, inspect, logs); every call is
recorded, so a test can say "nothing was touched": no call but reads. Writes (pull, create, stop, ...) are
not implemented: the unit tier runs the orchestrator against a recording executor, and real Docker proves the
rest in tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests

READS = frozenset(
    {"ping", "inspect_container", "inspect_image", "inspect_distribution", "logs", "close", "images", "containers"}
)


@dataclass
class FakeContainer:
    name: str
    image: str
    state: str = "running"
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    restart_count: int = 0
    digest: str = "sha256:" + "d" * 64
    # (time, stream, text) as the runtime wrote them; a line longer than 16 KiB is split as Docker splits it.
    output: list[tuple[str, str, str]] = field(default_factory=list)


class FakeDocker:
    """Answers like `docker.APIClient` for the calls the agent's reads make; `reachable=False` is Docker gone."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.by_name: dict[str, FakeContainer] = {}
        # Images as GET /images/json lists them: Id, RepoTags, RepoDigests, Size.
        self.image_list: list[dict[str, Any]] = []
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        # What the registry holds, by image reference, as the engine's distribution endpoint reports it; a
        # reference not listed answers as a registry answers for a tag it lacks.
        self.registry: dict[str, str] = {}

    # -- what the agent's connect() is: one shared fake for every "connection"
    def connect(self, **kwargs: Any) -> FakeDocker:
        self._call("connect", (), kwargs)
        return self

    def __enter__(self) -> FakeDocker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def touched(self) -> list[str]:
        """Every call that is not a read."""
        return [name for name, _, _ in self.calls if name not in READS | {"connect"}]

    def add(self, container: FakeContainer) -> FakeContainer:
        self.by_name[container.name] = container
        return container

    # -- the API subset
    def close(self) -> None:
        self._call("close", (), {})

    def ping(self) -> bool:
        self._call("ping", (), {})
        return True

    def inspect_container(self, name: str) -> dict[str, Any]:
        self._call("inspect_container", (name,), {})
        found = self._find(name)
        return {
            "Id": f"id-{found.name}",
            "Image": f"sha256:image-of-{found.image}",
            "RestartCount": found.restart_count,
            "State": {"Status": found.state, "StartedAt": "2026-11-30T10:00:00.000000000Z"},
            "Config": {
                "Image": found.image,
                "Env": [f"{k}={v}" for k, v in found.env.items()] + ["PATH=/bin"],
                "Labels": found.labels,
            },
        }

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self._call("inspect_image", (ref,), {})
        for container in self.by_name.values():
            if ref == f"sha256:image-of-{container.image}":
                return {"RepoDigests": [f"{container.image.rpartition(':')[0]}@{container.digest}"]}
        raise docker.errors.ImageNotFound(f"no such image: {ref}")

    def inspect_distribution(self, image: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
        self._call("inspect_distribution", (image,), {"auth_config": auth_config})
        if image not in self.registry:
            raise docker.errors.NotFound(f"{image}: manifest unknown")
        return {
            "Descriptor": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": self.registry[image]}
        }

    def logs(self, container: str, **options: Any) -> Iterator[bytes]:
        self._call("logs", (container,), options)
        found = next((c for c in self.by_name.values() if f"id-{c.name}" == container), None)
        if found is None:
            raise docker.errors.NotFound(f"no such container: {container}")
        wanted = "stdout" if options.get("stdout") else "stderr"
        frames = [frame for time, stream, text in found.output if stream == wanted for frame in _frames(time, text)]
        return iter(frames[-options["tail"] :] if options.get("tail") else frames)

    def images(self) -> list[dict[str, Any]]:
        self._call("images", (), {})
        return [dict(image) for image in self.image_list]

    def containers(self, all: bool = False) -> list[dict[str, Any]]:
        self._call("containers", (), {"all": all})
        return [
            {"Names": [f"/{c.name}"], "ImageID": self._image_id(c.image), "State": c.state}
            for c in self.by_name.values()
        ]

    def remove_image(self, reference: str) -> None:
        """Untag one reference; the image goes with its last one (as the engine does)."""
        self._call("remove_image", (reference,), {})
        for image in self.image_list:
            for key in ("RepoTags", "RepoDigests"):
                if reference in image.get(key, []):
                    image[key] = [r for r in image[key] if r != reference]
                    if not image["RepoTags"] and not image["RepoDigests"]:
                        self.image_list.remove(image)
                    return
        raise docker.errors.ImageNotFound(f"No such image: {reference}")

    def _image_id(self, reference: str) -> str:
        listed = next((i["Id"] for i in self.image_list if reference in i.get("RepoTags", [])), None)
        return str(listed or f"sha256:image-of-{reference}")

    def _find(self, name: str) -> FakeContainer:
        if name in self.by_name:
            return self.by_name[name]
        raise docker.errors.NotFound(f"No such container: {name}")

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((name, args, kwargs))
        if not self.reachable:
            raise requests.ConnectionError("Docker is not reachable (fake)")


def _frames(time: str, text: str) -> list[bytes]:
    """A line as Docker's json-file driver returns it: 16 KiB pieces, each with the timestamp, the last with \\n."""
    data = text.encode("utf-8")
    pieces = [data[i : i + 16384] for i in range(0, len(data), 16384)] or [b""]
    return [f"{time} ".encode() + piece + (b"\n" if i == len(pieces) - 1 else b"") for i, piece in enumerate(pieces)]
