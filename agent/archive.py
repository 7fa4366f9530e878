"""Every deployment by id, the newest in the API shape and older ones archived, so a long log replays in bounded memory.

A deployment in the API shape takes ~3.7 KB, so the ~125k deployments of a million records would take ~450 MB.
`Deployments` keeps the `detailed` most recently started or changed deployments (1000: the running one and each
environment's latest, in practice) as API-shaped dicts, and archives older ones losslessly in batches of `batch`
as `{id: deployment}` JSON, zlib-compressed (~100 bytes each: a batch shares keys, names, images and time
prefixes). Looking up an archived id decompresses its batch (~0.5 ms) and gives exactly what a fold without
archiving would hold; a record naming an archived deployment brings it back first.
"""

from __future__ import annotations

import json
import json.encoder
import zlib
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

# JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode, where CPython has its C encoder without the
# per-call setup and cycle check (a deployment is a tree): archiving is a third of the cost of a fold.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_dump = (
    None
    if _C_ENCODER is None
    else _C_ENCODER(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
)


def _encode(value: Any) -> str:
    return _ENCODER.encode(value) if _dump is None else "".join(_dump(value, 0))


class Deployments(Mapping[str, dict[str, Any]]):
    """Every deployment by id, in the API shape (treat them as read-only); old ones archived."""

    def __init__(self, *, detailed: int = 1000, batch: int = 64) -> None:
        self.detailed, self.batch = detailed, batch
        self.recent: dict[str, dict[str, Any]] = {}
        self._archived: dict[str, int] = {}  # id -> index in _batches
        self._batches: list[bytes] = []

    def __getitem__(self, deployment_id: str) -> dict[str, Any]:
        # The archive first: settle() and live() keep an id in one place or the other at every
        # instant in that order, so a reader in another thread never misses it mid-fold.
        index = self._archived.get(deployment_id)
        if index is None:
            return self.recent[deployment_id]
        found: dict[str, Any] = json.loads(zlib.decompress(self._batches[index]))[deployment_id]
        return found

    def __contains__(self, deployment_id: object) -> bool:
        return deployment_id in self.recent or deployment_id in self._archived

    def __iter__(self) -> Iterator[str]:
        yield from self._archived
        yield from self.recent

    def __len__(self) -> int:
        return len(self._archived) + len(self.recent)

    def live(self, deployment_id: str) -> dict[str, Any] | None:
        """The deployment as the dict a fold changes, brought back from the archive if need be."""
        found = self.recent.get(deployment_id)
        if found is None and deployment_id in self._archived:
            # Its copy in the batch goes stale: the index no longer points to it.
            found = self.recent[deployment_id] = self[deployment_id]
            del self._archived[deployment_id]
        return found

    def add(self, deployment: dict[str, Any]) -> None:
        """Hold a new deployment; archive the oldest ones once there are enough of them."""
        self.recent[deployment["id"]] = deployment
        self.settle()

    def settle(self) -> None:
        """Archive the oldest batch if recent ones exceed `detailed` by a whole batch."""
        if len(self.recent) < self.detailed + self.batch:
            return
        ids = list(islice(self.recent, self.batch))
        packed = _encode({i: self.recent[i] for i in ids}).encode("utf-8")
        self._batches.append(zlib.compress(packed, 1))  # level 1: nearly all of the gain
        self._archived.update(dict.fromkeys(ids, len(self._batches) - 1))
        for i in ids:
            del self.recent[i]
