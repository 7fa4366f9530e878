"""The append-only, hash-chained audit log: one canonical JSON record per line, fsynced."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
REQUIRED = ("seq", "time", "event", "deployment_id", "actor", "prev", "hash")
_REQUIRED_SET = frozenset(REQUIRED)
_TAIL_CHUNK = 4096


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python would accept them by default.
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.dumps/json.loads with options build a new coder on every call,
# which is a large share of the cost of verifying a million records.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_sha256 = hashlib.sha256


def canonical(record: dict[str, Any]) -> bytes:
    """The one byte form of a record that is hashed and written."""
    return _ENCODER.encode(record).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical form of a record that has no `hash` yet."""
    return _sha256(canonical(record)).hexdigest()


class AuditError(Exception):
    """The audit log could not be read or written."""


class ChainBroken(AuditError):
    """The audit log's hash chain is broken at one line."""

    def __init__(
        self, line: int, seq: int | None, reason: str, *, name: str = "audit.jsonl"
    ) -> None:
        super().__init__(line, seq, reason)
        self.line = line
        self.seq = seq
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"{self.name} line {self.line}{seq}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the exception picklable across processes despite the keyword option.
        return (type(self), (self.line, self.seq, self.reason), {"name": self.name})


class ChainVerifier:
    """Checks records one at a time against the chain seen so far."""

    def __init__(self, *, name: str = "audit.jsonl") -> None:
        self.name = name
        self.last_seq = 0
        self.last_hash = GENESIS

    def feed(self, line_no: int, raw: bytes | str) -> dict[str, Any]:
        """Parse one line and check it; raise ChainBroken naming the first problem."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            record = _DECODER.decode(text)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ChainBroken(line_no, None, f"not valid JSON ({e})", name=self.name) from e
        return self.check(line_no, record)

    def check(self, line_no: int, record: Any) -> dict[str, Any]:
        """Check one parsed record; on success it becomes the end of the chain."""
        if not isinstance(record, dict):
            raise ChainBroken(line_no, None, "not a JSON object", name=self.name)
        seq = record.get("seq")
        shown = seq if type(seq) is int else None
        if not record.keys() >= _REQUIRED_SET:
            missing = ", ".join(k for k in REQUIRED if k not in record)
            raise ChainBroken(line_no, shown, f"missing field(s) {missing}", name=self.name)
        if shown is None or seq != self.last_seq + 1:
            reason = f"seq is {seq!r}, expected {self.last_seq + 1}"
            raise ChainBroken(line_no, shown, reason, name=self.name)
        if record["prev"] != self.last_hash:
            reason = "prev does not match the hash of the previous record"
            if self.last_seq == 0:
                reason = "prev of the first record is not 64 zeros"
            raise ChainBroken(line_no, seq, reason, name=self.name)
        claimed = record.pop("hash")
        try:
            actual = _sha256(_ENCODER.encode(record).encode("utf-8")).hexdigest()
        except UnicodeEncodeError:  # a lone surrogate escape: never written by append
            actual = ""
        finally:
            record["hash"] = claimed
        if actual != claimed:
            raise ChainBroken(line_no, seq, "hash does not match the record", name=self.name)
        self.last_seq = seq
        self.last_hash = claimed
        return record


class AuditLog:
    """One audit log file, shared by every worker process and thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(
        self, event: str, *, deployment_id: str | None, actor: str, **fields: Any
    ) -> dict[str, Any]:
        """Append one record and fsync it before returning it."""
        clash = _REQUIRED_SET.intersection(fields)
        if clash:
            raise ValueError(f"audit fields {sorted(clash)} are reserved for the chain")
        fd = -1
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            # flock, not a thread lock: every append opens its own file description,
            # so this serializes threads and gunicorn workers alike.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size, last_seq, prev = self._tail(fd)
            record: dict[str, Any] = {
                "seq": last_seq + 1,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "event": event,
                "deployment_id": deployment_id,
                "actor": actor,
                **fields,
                "prev": prev,
            }
            record["hash"] = record_hash(record)
            data = canonical(record) + b"\n"
            # One write: readers and a crash see the whole line or a torn tail, never
            # an interleaving with another writer.
            if os.write(fd, data) != len(data):
                os.ftruncate(fd, size)  # a torn line has no newline, so no reader used it
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
        """The file size and the last record's seq and hash, reading only the last line."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, GENESIS
        rfd = os.open(self.path, os.O_RDONLY)
        try:
            if not os.path.samestat(os.fstat(rfd), os.fstat(fd)):
                raise AuditError(f"the audit log {self.path} was replaced during an append")
            line = _last_line(rfd, size)
        finally:
            os.close(rfd)
        if not line.endswith(b"\n"):
            raise AuditError(
                f"the last line of the audit log {self.path} is incomplete; "
                "run `deployplan audit verify` and repair the log before appending"
            )
        try:
            record = _DECODER.decode(line.decode("utf-8"))
            seq, claimed = record["seq"], record.pop("hash")
            intact = type(seq) is int and claimed == record_hash(record)
        except (ValueError, TypeError, KeyError, AttributeError):
            intact = False
        if not intact:
            raise AuditError(
                f"the last record of the audit log {self.path} does not match its hash; "
                "run `deployplan audit verify` before appending"
            )
        return size, seq, claimed

    def read_from(
        self, offset: int, *, verifier: ChainVerifier | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The complete records from byte `offset` on, and the offset after them.

        With `verifier` (fed from offset 0 on), each line is checked as it is read;
        records before a broken line are returned and the next call raises. `limit`
        bounds how many records one call returns, so a caller can replay in batches.
        """
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            if offset:
                raise AuditError(f"the audit log {self.path} disappeared") from None
            return [], 0
        except OSError as e:
            raise AuditError(f"cannot read the audit log {self.path}: {e.strerror}") from e
        records: list[dict[str, Any]] = []
        with f:
            if offset > os.fstat(f.fileno()).st_size:
                raise AuditError(f"the audit log {self.path} shrank below byte {offset}")
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # being written right now: it is returned by a later call
                if verifier is None:
                    records.append(self._parse(raw, offset))
                else:
                    try:
                        records.append(verifier.feed(verifier.last_seq + 1, raw))
                    except ChainBroken:
                        if records:
                            break
                        raise
                offset += len(raw)
                if limit is not None and len(records) >= limit:
                    break
        return records, offset

    def _parse(self, raw: bytes, offset: int) -> dict[str, Any]:
        try:
            record = _DECODER.decode(raw.decode("utf-8"))
        except ValueError as e:
            raise AuditError(f"the audit log {self.path} at byte {offset}: not valid JSON") from e
        if not isinstance(record, dict):
            raise AuditError(f"the audit log {self.path} at byte {offset}: not a JSON object")
        return record

    def verify(self) -> int:
        """Verify the whole chain in constant memory; return the number of records."""
        verifier = ChainVerifier(name=str(self.path))
        feed = verifier.feed
        try:
            with open(self.path, "rb") as f:
                # A shared lock waits out an append in progress, so every byte up to
                # this size belongs to a complete write (or to a crashed, torn one).
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                remaining = os.fstat(f.fileno()).st_size
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                for line_no, raw in enumerate(f, 1):
                    remaining -= len(raw)
                    if remaining > 0:
                        feed(line_no, raw)
                        continue
                    last = raw[: len(raw) + remaining]  # drop bytes appended since
                    if not last.endswith(b"\n"):
                        reason = "the last line is incomplete (no newline at its end)"
                        raise ChainBroken(line_no, None, reason, name=verifier.name)
                    feed(line_no, last)
                    break
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise AuditError(f"cannot read the audit log {self.path}: {e.strerror}") from e
        return verifier.last_seq


def _last_line(fd: int, size: int) -> bytes:
    """The file's last line (with its newline), read backwards from the end."""
    chunk = _TAIL_CHUNK
    end = size
    tail = b""
    while True:
        start = max(0, end - chunk)
        tail = os.pread(fd, end - start, start) + tail
        # The file's final byte is the last line's own newline: search before it.
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1 :]
        if start == 0:
            return tail
        end = start
        chunk *= 2  # doubling keeps a very long last line linear to read


def verify_file(path: Path) -> int:
    """Verify the audit log at `path`; return its record count or raise ChainBroken."""
    return AuditLog(path).verify()
