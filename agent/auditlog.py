"""The audit log file: appended under an exclusive lock and fsynced, read from any offset, its torn tail repaired.

What a record is and how the chain is checked lives in `runner.core.chain`; this module only does file I/O.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from runner.core.chain import (
    GENESIS,
    REQUIRED,
    ChainBroken,
    ChainVerifier,
    Head,
    Verified,
    canonical,
    parse,
    verify_lines,
)

_RESERVED = frozenset(REQUIRED)
# The log and everything beside it is the agent's alone: a reader could hold a shared lock and stall appends.
FILE_MODE = 0o600


class AuditError(Exception):
    """The audit log could not be read or written."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """One audit log file, shared by every worker process and thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, *, deployment_id: str | None, actor: str, **fields: Any) -> dict[str, Any]:
        """Append one record, fsynced before this returns it."""
        if clash := _RESERVED.intersection(fields):
            raise ValueError(f"audit fields {sorted(clash)} are reserved for the chain")
        with self._locked() as fd:
            size, last_seq, prev = self._tail(fd)
            record: dict[str, Any] = {"seq": last_seq + 1, "time": utc_now(), "event": event}
            record.update(deployment_id=deployment_id, actor=actor, **fields, prev=prev)
            try:
                body = canonical(record)
            except ValueError as e:  # callers pass text from requests through runner.core.text first
                raise AuditError(f"record {event} has no canonical form ({e}); nothing was written") from e
            record["hash"] = _sha256(body)
            data = canonical(record) + b"\n"
            try:
                # One write: a reader or a crash sees the whole line or a torn tail.
                if os.write(fd, data) != len(data):
                    os.ftruncate(fd, size)  # the torn line has no newline: no reader took it
                    raise AuditError(f"cannot write the audit log {self.path}: short write")
                os.fsync(fd)
            except OSError as e:
                raise AuditError(f"cannot write the audit log {self.path}: {e.strerror}") from e
        return record

    def repair_torn_tail(self) -> tuple[Path, int] | None:
        """Move bytes after the last newline (a crash mid-append) to `audit.torn-<time>`; returns (file, size).

        Those bytes were never a complete record, so the action they announced never began. They are kept
        beside the log as evidence, and the log ends at its last complete record again.
        """
        if not self.path.exists():
            return None
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            cut = _after_last_newline(fd, size)
            if cut == size:
                return None
            torn = os.pread(fd, size - cut, cut)
            kept = self.path.with_name(f"{self.path.name.removesuffix('.jsonl')}.torn-{utc_now()}")
            try:
                out = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                try:
                    os.write(out, torn)
                    os.fsync(out)
                finally:
                    os.close(out)
                os.ftruncate(fd, cut)
                os.fsync(fd)
            except OSError as e:
                raise AuditError(f"cannot set aside the torn tail of {self.path}: {e.strerror}") from e
        return kept, len(torn)

    def read_from(
        self,
        offset: int,
        *,
        verifier: ChainVerifier | None = None,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Complete lines from byte `offset` on (at most `limit` of them, and stopping once `max_bytes` are
        read), parsed, and the offset after them."""
        records: list[dict[str, Any]] = []
        start = offset
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
                    records.append(parse(raw.decode("utf-8")))
                except ValueError as e:
                    raise AuditError(f"{self.path} at byte {offset}: not JSON ({e})") from e
                if not isinstance(records[-1], dict):
                    raise AuditError(f"{self.path} at byte {offset}: not a JSON object")
            offset = end
            if len(records) == limit or (max_bytes is not None and offset - start >= max_bytes):
                break
        return records, offset

    def page(self, offset: int, *, after: int, limit: int, max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
        """Records with a seq above `after`, read from byte `offset` (at or before the first of them): at most
        `limit` records, stopping once `max_bytes` of them are read (one at least); and whether more may follow."""
        records: list[dict[str, Any]] = []
        size = 0
        for raw, _ in self._lines(offset):
            if len(records) == limit or (records and size + len(raw) > max_bytes):
                return records, True
            try:
                record = parse(raw.decode("utf-8"))
            except ValueError as e:
                raise AuditError(f"{self.path}: a line after record {after} is not JSON ({e})") from e
            if isinstance(record, dict) and type(record.get("seq")) is int and record["seq"] > after:
                records.append(record)
                size += len(raw)
        return records, False

    def verify(self, *, anchors: tuple[Head, ...] = ()) -> Verified:
        """Verify the whole chain in constant memory (raises ChainBroken)."""
        size = self._settled_size()
        return verify_lines(self._raw_lines(size), name=str(self.path), anchors=anchors)

    def _raw_lines(self, size: int) -> Iterator[bytes]:
        """Every line below `size`, the last one possibly without its newline."""
        try:
            with open(self.path, "rb") as f:
                while f.tell() < size:
                    yield f.readline(size - f.tell())
        except FileNotFoundError:
            return
        except OSError as e:
            raise AuditError(f"cannot read the audit log {self.path}: {e.strerror}") from e

    def _tail(self, fd: int) -> tuple[int, int, str]:
        """The file size and the last record's seq and hash, from the last line only."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, GENESIS
        line = _last_line(fd, size)
        try:
            record = parse(line.decode("utf-8"))
            seq, claimed = record["seq"], record.pop("hash")
            if claimed == _sha256(canonical(record)) and type(seq) is int and line.endswith(b"\n"):
                return size, seq, claimed
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        raise AuditError(  # chaining onto it would hide the damage behind valid records
            f"the last record of the audit log {self.path} is torn or does not match its hash; "
            "run `deployplan audit verify` before appending"
        )

    def _locked(self) -> _Locked:
        return _Locked(self.path)

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


class _Locked:
    """The log opened read-write (created 0600) under an exclusive flock, which serializes threads and workers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> int:
        try:
            # Read-write, so the last line is read through the very description we lock.
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:
            self.__exit__()
            raise AuditError(f"cannot write the audit log {self.path}: {e.strerror}") from e
        return self.fd

    def __exit__(self, *exc_info: object) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _sha256(data: bytes) -> str:
    return sha256(data).hexdigest()


def _after_last_newline(fd: int, size: int, *, chunk: int = 4096) -> int:
    """The offset just after the file's last newline (0 when it has none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end, chunk = start, chunk * 2
    return 0


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
