"""The append-only, hash-chained audit log: one canonical JSON record per line, fsynced."""

from __future__ import annotations

import fcntl
import json
import os
from _json import encode_basestring, make_encoder
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
REQUIRED = ("seq", "time", "event", "deployment_id", "actor", "prev", "hash")
_REQUIRED_SET = frozenset(REQUIRED)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python would accept NaN and Infinity


# Built once: json.dumps/json.loads with options build a new coder on every call; _dump
# is _ENCODER.encode minus its per-call setup and cycle check (parsed JSON has no cycles).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_dump = make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, False)


def _parse(text: str) -> Any:
    try:
        value, end = _scan(text, 0)  # JSONDecoder.decode minus its two regex passes
    except StopIteration:
        end = -1
    if end != len(text) and (end < 0 or text[end:].strip()):
        return _DECODER.decode(text)  # raises a precise error, or allows odd whitespace
    return value


def canonical(record: dict[str, Any]) -> bytes:
    """The one byte form of a record that is hashed and written."""
    return _ENCODER.encode(record).encode("utf-8")


class AuditError(Exception):
    """The audit log could not be read or written."""


class ChainBroken(AuditError):
    """The audit log's hash chain is broken at one line."""

    def __init__(self, line: int, seq: int | None, reason: str, *, name: str = "audit.jsonl") -> None:
        super().__init__(line, seq, reason)
        self.line, self.seq, self.reason, self.name = line, seq, reason, name

    def __str__(self) -> str:
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"{self.name} line {self.line}{seq}: {self.reason}"


class ChainVerifier:
    """Checks records one at a time against the chain seen so far."""

    def __init__(self, *, name: str = "audit.jsonl") -> None:
        self.name, self.last_seq, self.last_hash = name, 0, GENESIS

    def feed(self, line_no: int, raw: bytes | str) -> dict[str, Any]:
        """Parse one line and check it; raise ChainBroken naming the first problem."""
        try:
            record = _parse(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
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
            reason = f"seq is {seq!r}, expected {self.last_seq + 1}"
            raise ChainBroken(line_no, known, reason, name=self.name)
        if record["prev"] != self.last_hash:
            first = "prev of the first record is not 64 zeros"
            reason = first if self.last_seq == 0 else "prev does not match the hash of the previous record"
            raise ChainBroken(line_no, seq, reason, name=self.name)
        claimed = record.pop("hash")
        try:
            actual = sha256("".join(_dump(record, 0)).encode("utf-8")).hexdigest()
        except ValueError:  # a lone surrogate or an overflowing float: append writes neither
            actual = ""
        finally:
            record["hash"] = claimed
        if actual != claimed:
            raise ChainBroken(line_no, seq, "hash does not match the record", name=self.name)
        self.last_seq, self.last_hash = seq, claimed
        return record


class AuditLog:
    """One audit log file, shared by every worker process and thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, *, deployment_id: str | None, actor: str, **fields: Any) -> dict[str, Any]:
        """Append one record, fsynced before this returns it."""
        if clash := _REQUIRED_SET.intersection(fields):
            raise ValueError(f"audit fields {sorted(clash)} are reserved for the chain")
        fd = -1
        try:
            # flock on a description of our own serializes threads and workers alike;
            # read-write, so the last line is read through the very description we lock.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            size, last_seq, prev = self._tail(fd)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            record: dict[str, Any] = {"seq": last_seq + 1, "time": now, "event": event}
            record.update(deployment_id=deployment_id, actor=actor, **fields, prev=prev)
            record["hash"] = sha256(canonical(record)).hexdigest()
            data = canonical(record) + b"\n"
            # One write: a reader or a crash sees the whole line or a torn tail.
            if os.write(fd, data) != len(data):
                os.ftruncate(fd, size)  # the torn line has no newline: no reader took it
                raise AuditError(f"cannot write the audit log {self.path}: short write")
            os.fsync(fd)
        except OSError as e:
            raise AuditError(f"cannot write the audit log {self.path}: {e.strerror}") from e
        finally:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        return record

    def _tail(self, fd: int) -> tuple[int, int, str]:
        """The file size and the last record's seq and hash, from the last line only."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, GENESIS
        line = _last_line(fd, size)
        try:
            record = _parse(line.decode("utf-8"))
            seq, claimed = record["seq"], record.pop("hash")
            intact = claimed == sha256(canonical(record)).hexdigest()
            if intact and type(seq) is int and line.endswith(b"\n"):
                return size, seq, claimed
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        raise AuditError(  # chaining onto it would hide the damage behind valid records
            f"the last record of the audit log {self.path} is torn or does not match its hash; "
            "run `deployplan audit verify` before appending"
        )

    def read_from(
        self, offset: int, *, verifier: ChainVerifier | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Complete lines from byte `offset` on (at most `limit`), parsed, and the offset after them."""
        records: list[dict[str, Any]] = []
        for raw, end in self._lines(offset):
            if verifier is not None:  # one that has seen every line before `offset`
                try:  # records before a broken line are returned; the next call raises
                    records.append(verifier.feed(verifier.last_seq + 1, raw))
                except ChainBroken:
                    if records:
                        break
                    raise
            else:
                try:
                    records.append(_parse(raw.decode("utf-8")))
                except ValueError as e:
                    raise AuditError(f"{self.path} at byte {offset}: not JSON ({e})") from e
                if not isinstance(records[-1], dict):
                    raise AuditError(f"{self.path} at byte {offset}: not a JSON object")
            offset = end
            if len(records) == limit:
                break
        return records, offset

    def verify(self) -> int:
        """Verify the whole chain in constant memory; return the number of records."""
        verifier, end = ChainVerifier(name=str(self.path)), 0
        size = self._settled_size()
        for raw, end in self._lines(0):
            if end > size:
                break  # appended since the size was taken
            verifier.feed(verifier.last_seq + 1, raw)  # line N holds seq N in an intact log
        if end < size:  # the lines stopped short of the size, at a line with no newline
            reason = "the last line is incomplete (no newline at its end)"
            raise ChainBroken(verifier.last_seq + 1, None, reason, name=verifier.name)
        return verifier.last_seq

    def _settled_size(self) -> int:
        """The file size with no append in progress: all bytes below it are final."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise AuditError(f"cannot read the audit log {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits for an append in progress to finish
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _lines(self, offset: int) -> Iterator[tuple[bytes, int]]:
        """Each complete line from byte `offset` on, with the offset after it."""
        try:
            with open(self.path, "rb") as f:
                if offset > os.fstat(f.fileno()).st_size:
                    raise AuditError(f"the audit log {self.path} shrank below byte {offset}")
                f.seek(offset)
                for raw in f:
                    if not raw.endswith(b"\n"):
                        return  # still being written, or torn: never a record yet
                    offset += len(raw)
                    yield raw, offset
        except FileNotFoundError:
            if offset:
                raise AuditError(f"the audit log {self.path} disappeared") from None
        except OSError as e:
            raise AuditError(f"cannot read the audit log {self.path}: {e.strerror}") from e


def _last_line(fd: int, size: int, *, chunk: int = 4096) -> bytes:
    """The file's last line (with its newline), read backwards from the end."""
    end, tail = size, b""
    while True:
        start = max(0, end - chunk)
        tail = os.pread(fd, end - start, start) + tail
        # The file's final byte is the last line's own newline: search before it.
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1 :]
        if start == 0:
            return tail
        end, chunk = start, chunk * 2  # doubling keeps a huge last line linear to read


def verify_file(path: Path) -> int:
    """Verify the audit log at `path`; return its record count or raise ChainBroken."""
    return AuditLog(path).verify()
