"""The audit log's hash chain, without any file: the one canonical byte form of a record, and checking a chain.

The agent writes and reads the log file (`agent.auditlog`); `deployplan audit verify` reads a copy of it. Both
check it with this module, so a record means the same thing on the server and on an operator's laptop.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from runner.core.errors import DeployplanError

GENESIS = "0" * 64
REQUIRED = ("seq", "time", "event", "deployment_id", "actor", "prev", "hash")
_REQUIRED_SET = frozenset(REQUIRED)
_HASH = re.compile(r"[0-9a-f]{64}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python would accept NaN and Infinity


# Built once. The canonical form is json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False). Replaying a large log is mostly encoding and scanning, so where CPython has its C encoder
# (json.encoder.c_make_encoder, what JSONEncoder itself uses) it is made once here, without the per-call setup
# and cycle check (records are trees); the scanner is JSONDecoder.decode minus its two regex passes.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_dump = (
    None
    if _C_ENCODER is None
    else _C_ENCODER(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def canonical(record: Mapping[str, Any]) -> bytes:
    """The one byte form of a record that is hashed and written: sorted keys, no spaces, UTF-8.

    Raises ValueError for what has no such form (a lone surrogate, NaN): such a record is never written.
    """
    text = _ENCODER.encode(record) if _dump is None else "".join(_dump(record, 0))
    return text.encode("utf-8")


def parse(text: str) -> Any:
    """One JSON value, strictly (no NaN or Infinity); raises ValueError."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text) and (end < 0 or text[end:].strip()):
        return _DECODER.decode(text)  # raises a precise error, or allows odd whitespace
    return value


class ChainBroken(DeployplanError):
    """The audit log's hash chain is broken at one line."""

    def __init__(self, line: int, seq: int | None, reason: str, *, name: str = "audit.jsonl") -> None:
        super().__init__(line, seq, reason)
        self.line, self.seq, self.reason, self.name = line, seq, reason, name

    def __str__(self) -> str:
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"{self.name} line {self.line}{seq}: {self.reason}"


@dataclass(frozen=True)
class Head:
    """A record's place in the chain: the `audit_head` that leaves the server with every deployment answer."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """`SEQ:HASH`, as `apply` prints it; raises ValueError saying what is wrong."""
        seq, _, digest = text.partition(":")
        if not (seq.isascii() and seq.isdigit() and int(seq) > 0 and _HASH.fullmatch(digest)):
            raise ValueError(f"{text!r} is not SEQ:HASH (a record number and its 64-hex hash, as apply prints it)")
        return cls(int(seq), digest)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


class ChainVerifier:
    """Checks records one at a time against the chain seen so far, and against anchors kept off the server."""

    def __init__(self, *, name: str = "audit.jsonl", anchors: Iterable[Head] = ()) -> None:
        self.name, self.last_seq, self.last_hash = name, 0, GENESIS
        self.anchors = {anchor.seq: anchor for anchor in anchors}

    def feed(self, line_no: int, raw: bytes | str) -> dict[str, Any]:
        """Parse one line and check it; raise ChainBroken naming the first problem."""
        try:
            record = parse(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ChainBroken(line_no, None, f"not valid JSON ({e})", name=self.name) from e
        return self.check(line_no, record)

    def check(self, line_no: int, record: Any) -> dict[str, Any]:
        """Check one parsed record; if intact it becomes the end of the chain."""
        if not isinstance(record, dict):
            raise ChainBroken(line_no, None, "not a JSON object", name=self.name)
        seq = record.get("seq")
        known = seq if type(seq) is int else None
        if not record.keys() >= _REQUIRED_SET:
            missing = ", ".join(k for k in REQUIRED if k not in record)
            raise ChainBroken(line_no, known, f"missing field(s) {missing}", name=self.name)
        if known is None or seq != self.last_seq + 1:
            raise ChainBroken(line_no, known, f"seq is {seq!r}, expected {self.last_seq + 1}", name=self.name)
        if record["prev"] != self.last_hash:
            first = "prev of the first record is not 64 zeros"
            reason = first if self.last_seq == 0 else "prev does not match the hash of the previous record"
            raise ChainBroken(line_no, seq, reason, name=self.name)
        claimed = record.pop("hash")
        try:
            actual = sha256(canonical(record)).hexdigest()
        except ValueError:  # a lone surrogate or an overflowing float: append writes neither
            actual = ""
        finally:
            record["hash"] = claimed
        if actual != claimed:
            raise ChainBroken(line_no, seq, "hash does not match the record", name=self.name)
        anchor = self.anchors.get(seq)
        if anchor is not None and anchor.hash != claimed:
            reason = f"anchor {anchor} does not match: the record {seq} here has the hash {claimed}"
            raise ChainBroken(line_no, seq, reason, name=self.name)
        self.last_seq, self.last_hash = seq, claimed
        return record

    def finish(self) -> Head | None:
        """After the last record: every anchor must have been seen; the head of the chain (None when empty)."""
        beyond = sorted(seq for seq in self.anchors if seq > self.last_seq)
        if beyond:
            anchor = self.anchors[beyond[0]]
            reason = f"anchor {anchor} is missing: the log ends at record {self.last_seq}, so records were removed"
            raise ChainBroken(self.last_seq + 1, anchor.seq, reason, name=self.name)
        return Head(self.last_seq, self.last_hash) if self.last_seq else None


@dataclass(frozen=True)
class Verified:
    """An intact chain: its head, and the bytes of a torn last line (never part of the chain), if any."""

    records: int
    head: Head | None
    torn_bytes: int


def verify_lines(lines: Iterable[bytes], *, name: str, anchors: Iterable[Head] = ()) -> Verified:
    """Verify a whole log given as its raw lines (the last one may lack its newline: a torn append).

    A torn last line is not part of the chain: its record was never complete, so what it announced never began.
    Raises ChainBroken naming the first broken line or the first anchor that does not hold.
    """
    verifier = ChainVerifier(name=name, anchors=anchors)
    torn = 0
    for raw in lines:
        if not raw.endswith(b"\n"):
            torn = len(raw)
            break
        verifier.feed(verifier.last_seq + 1, raw)  # line N holds seq N in an intact log
    head = verifier.finish()
    return Verified(records=verifier.last_seq, head=head, torn_bytes=torn)
