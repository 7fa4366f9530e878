"""The audit log: appends build an intact hash chain, and every kind of damage is named by line."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.auditlog import AuditError, AuditLog
from runner.core.chain import GENESIS, ChainBroken, ChainVerifier
from runner.core.errors import DeployplanError

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
Lines = list[bytes]


def spec_dump(record: dict[str, Any]) -> bytes:
    """The canonical form exactly as the contract words it, independent of agent.audit."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sealed(record: dict[str, Any]) -> bytes:
    """A line whose own hash is right for whatever `record` holds (a careful forger's line)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return spec_dump({**body, "hash": hashlib.sha256(spec_dump(body)).hexdigest()}) + b"\n"


def fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.append("step_started", deployment_id="d1", actor="ops@example.com", step="pull", n=n)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    """A log of five intact records."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    fill(audit, 5)
    return audit


def test_append_writes_the_chain_the_contract_describes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append("deploy_refused", deployment_id=None, actor="ops@example.com", environment=None, reason="é ☃")
    second = log.append("step_started", deployment_id="d1", actor="svc", step="pull", actions=["pull x"])

    lines = log.path.read_bytes().splitlines(keepends=True)
    assert lines == [spec_dump(first) + b"\n", spec_dump(second) + b"\n"]
    assert "é ☃".encode() in lines[0]  # UTF-8 as is, not \\u escapes
    assert (first["seq"], first["prev"], second["seq"], second["prev"]) == (1, GENESIS, 2, first["hash"])
    for record in (first, second):
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(spec_dump(body)).hexdigest()
        assert TIME.match(record["time"])
    assert second["event"] == "step_started" and second["actions"] == ["pull x"]
    assert first["deployment_id"] is None and first["environment"] is None
    assert log.verify().records == 2


def test_a_new_log_file_is_not_world_readable(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    fill(log, 1)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600 & ~umask


# event, deployment_id and actor are parameters already: Python itself refuses them twice.
@pytest.mark.parametrize("name", ["seq", "time", "prev", "hash"])
def test_chain_fields_cannot_be_passed_as_event_fields(tmp_path: Path, name: str) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match=name):
        log.append("step_started", deployment_id="d1", actor="ops", **{name: "x"})
    assert not log.path.exists()


def test_a_missing_log_is_empty_and_intact(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert log.verify().records == 0
    assert log.read_from(0) == ([], 0)


def _edit(line: int, **changes: Any) -> Callable[[Lines], None]:
    def apply(lines: Lines) -> None:
        lines[line - 1] = spec_dump({**json.loads(lines[line - 1]), **changes}) + b"\n"

    return apply


def _reseal(line: int, drop: str | None = None, **changes: Any) -> Callable[[Lines], None]:
    def apply(lines: Lines) -> None:
        record = {**json.loads(lines[line - 1]), **changes}
        record.pop(drop or "", None)
        lines[line - 1] = sealed(record)

    return apply


def _delete(lines: Lines) -> None:
    del lines[2]


def _swap(lines: Lines) -> None:
    lines[1], lines[2] = lines[2], lines[1]


def _cut_last(lines: Lines) -> None:
    lines[-1] = lines[-1][:-20]


def _cut_last_keep_newline(lines: Lines) -> None:
    lines[-1] = lines[-1][:-20] + b"\n"


def _insert(text: bytes) -> Callable[[Lines], None]:
    def apply(lines: Lines) -> None:
        lines.insert(1, text)

    return apply


DAMAGE = [
    pytest.param(_edit(3, actor="mallory"), 3, 3, "hash does not match the record", id="field tampered"),
    pytest.param(_edit(3, seq=33), 3, 33, "seq is 33, expected 3", id="seq tampered"),
    pytest.param(_delete, 3, 4, "seq is 4, expected 3", id="line deleted"),
    pytest.param(_swap, 2, 3, "seq is 3, expected 2", id="two lines reordered"),
    pytest.param(_cut_last_keep_newline, 5, None, "not valid JSON", id="last line truncated, newline kept"),
    pytest.param(_insert(b"hello\n"), 2, None, "not valid JSON", id="non-JSON line"),
    pytest.param(_insert(b"\n"), 2, None, "not valid JSON", id="blank line"),
    pytest.param(_insert(b"[1, 2]\n"), 2, None, "not a JSON object", id="JSON array line"),
    pytest.param(_insert(b'{"seq": NaN}\n'), 2, None, "not valid JSON", id="NaN is not JSON"),
    pytest.param(_insert(b"\xff\xfe\n"), 2, None, "not valid JSON", id="not UTF-8"),
    pytest.param(_reseal(1, prev="1" * 64), 1, 1, "prev of the first record is not 64 zeros", id="wrong first prev"),
    pytest.param(_reseal(3, actor="mallory"), 4, 4, "prev does not match the hash of the previous", id="resealed"),
    pytest.param(_reseal(2, drop="actor"), 2, 2, "missing field(s) actor", id="field missing"),
    pytest.param(_reseal(2, seq="2"), 2, None, "seq is '2', expected 2", id="seq not an integer"),
]


def test_a_torn_last_line_is_not_part_of_the_chain(log: AuditLog) -> None:
    """A crash mid-append leaves bytes after the last newline: never a record, so the chain before it is intact."""
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:-1]) + lines[-1][:-20])

    verified = log.verify()

    assert (verified.records, verified.torn_bytes) == (len(lines) - 1, len(lines[-1]) - 20)


@pytest.mark.parametrize(("damage", "line", "seq", "reason"), DAMAGE)
def test_verify_names_the_first_broken_line(
    log: AuditLog, damage: Callable[[Lines], None], line: int, seq: int | None, reason: str
) -> None:
    lines = log.path.read_bytes().splitlines(keepends=True)
    damage(lines)
    log.path.write_bytes(b"".join(lines))

    with pytest.raises(ChainBroken) as caught:
        log.verify()

    assert (caught.value.line, caught.value.seq) == (line, seq)
    assert reason in caught.value.reason
    shown = f"{log.path} line {line}" + ("" if seq is None else f" (seq {seq})")
    assert str(caught.value).startswith(f"{shown}: ")


def test_chain_broken_reads_like_the_contract() -> None:
    broken = ChainBroken(7, 7, "hash does not match the record")
    assert str(broken) == "audit.jsonl line 7 (seq 7): hash does not match the record"
    assert str(ChainBroken(2, None, "not valid JSON", name="x.jsonl")) == "x.jsonl line 2: not valid JSON"
    assert isinstance(broken, DeployplanError)


def test_verifier_is_incremental_and_takes_text_or_parsed_records(log: AuditLog) -> None:
    lines = log.path.read_bytes().splitlines(keepends=True)
    verifier = ChainVerifier()
    verifier.feed(1, lines[0])
    verifier.feed(2, lines[1].decode())
    verifier.check(3, json.loads(lines[2]))
    assert (verifier.last_seq, verifier.last_hash) == (3, json.loads(lines[2])["hash"])
    with pytest.raises(ChainBroken, match="line 5 \\(seq 5\\): seq is 5, expected 4"):
        verifier.feed(5, lines[4])
    assert verifier.last_seq == 3  # a broken line does not move the chain on


def test_append_refuses_to_chain_onto_a_damaged_last_record(log: AuditLog) -> None:
    for damage in (_cut_last, _edit(5, actor="mallory")):
        lines = log.path.read_bytes().splitlines(keepends=True)
        intact = b"".join(lines)
        damage(lines)
        log.path.write_bytes(b"".join(lines))
        before = log.path.read_bytes()
        with pytest.raises(AuditError, match="run `deployplan audit verify`"):
            fill(log, 1)
        assert log.path.read_bytes() == before
        log.path.write_bytes(intact)


def test_append_reads_only_the_last_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    # Garbage before a sound last record proves the append never parsed what came before it.
    last = sealed({"seq": 41, "time": "t", "event": "e", "deployment_id": None, "actor": "a", "prev": "p" * 64})
    log.path.write_bytes(b"not json\n" * 100_000 + last)
    record = log.append("step_started", deployment_id="d1", actor="ops")
    assert (record["seq"], record["prev"]) == (42, json.loads(last)["hash"])


@pytest.mark.parametrize("size", [4095, 4096, 4097, 20_000, 100_000])
def test_a_last_line_longer_than_the_tail_chunk(tmp_path: Path, size: int) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    fill(log, 2)
    log.append("deployment_finished", deployment_id="d1", actor="ops", logs=["x" * size], state="failed")
    fill(log, 1)
    assert log.verify().records == 4
    only = AuditLog(tmp_path / "alone.jsonl")  # the long line is the whole file: read back to byte 0
    only.append("deployment_finished", deployment_id="d1", actor="ops", logs=["é" * size])
    assert only.append("step_started", deployment_id="d1", actor="ops")["seq"] == 2
    assert only.verify().records == 2


def test_read_from_returns_complete_lines_only(log: AuditLog) -> None:
    records, offset = log.read_from(0)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert offset == log.path.stat().st_size

    fill(log, 1)
    line = log.path.read_bytes()[offset:]
    with log.path.open("r+b") as f:
        f.truncate(offset + 50)  # a writer caught halfway through its line
    assert log.read_from(offset) == ([], offset)
    with log.path.open("ab") as f:
        f.write(line[50:])
    records, end = log.read_from(offset)
    assert [r["seq"] for r in records] == [6]
    assert end == offset + len(line)


def test_read_from_in_batches_with_a_verifier(log: AuditLog) -> None:
    verifier, offset, seen = ChainVerifier(), 0, []
    while True:
        records, offset = log.read_from(offset, verifier=verifier, limit=2)
        if not records:
            break
        seen.append([r["seq"] for r in records])
    assert seen == [[1, 2], [3, 4], [5]]
    assert verifier.last_seq == 5


def test_read_from_with_a_verifier_returns_what_precedes_a_break(log: AuditLog) -> None:
    lines = log.path.read_bytes().splitlines(keepends=True)
    _edit(4, actor="mallory")(lines)
    log.path.write_bytes(b"".join(lines))
    verifier = ChainVerifier()
    records, offset = log.read_from(0, verifier=verifier)
    assert [r["seq"] for r in records] == [1, 2, 3]
    with pytest.raises(ChainBroken, match="line 4 \\(seq 4\\): hash does not match"):
        log.read_from(offset, verifier=verifier)


def test_read_from_refuses_a_log_that_shrank_or_vanished(log: AuditLog) -> None:
    size = log.path.stat().st_size
    log.path.write_bytes(b"")
    with pytest.raises(AuditError, match="shrank"):
        log.read_from(size)
    log.path.unlink()
    with pytest.raises(AuditError, match="disappeared"):
        log.read_from(size)
    log.path.write_bytes(b"oops\n")
    with pytest.raises(AuditError, match="at byte 0: not JSON"):
        log.read_from(0)


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path))
    for n in range(count):
        log.append("step_started", deployment_id=f"d{worker}", actor=f"worker-{worker}", step="pull", n=n)


def test_concurrent_appends_from_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), w, 50)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    assert AuditLog(path).verify().records == 200
    records, _ = AuditLog(path).read_from(0)
    for w in range(4):
        assert [r["n"] for r in records if r["actor"] == f"worker-{w}"] == list(range(50))


def test_concurrent_appends_from_threads_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads = [threading.Thread(target=_append_many, args=(str(path), w, 25)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert AuditLog(path).verify().records == 100


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_append_where_no_file_can_be_written_raises_audit_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nowhere" / "audit.jsonl" if where == "missing directory" else tmp_path
    with pytest.raises(AuditError, match=f"cannot write the audit log {re.escape(str(path))}: "):
        AuditLog(path).append("step_started", deployment_id="d1", actor="ops")


NOBODY = 65534


def _append_as_nobody(path: str) -> str:
    # Root writes through file permissions; an unprivileged user (as the agent runs) does not.
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    try:
        AuditLog(Path(path)).append("step_started", deployment_id="d1", actor="ops", step="pull")
    except AuditError as e:
        return str(e)
    return "appended"


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A directory the unprivileged user owns, reachable by it (pytest's own tmp dirs are root-only)."""
    base = Path(tempfile.mkdtemp(prefix="deployplan-audit-"))
    base.chmod(0o755)
    directory = base / "state"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    yield directory
    shutil.rmtree(base)


def _as_nobody(path: Path) -> str:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_append_as_nobody, str(path)).result(timeout=60)


@pytest.mark.parametrize("read_only", ["nothing", "directory", "file"])
def test_append_to_a_read_only_directory_or_file_raises_audit_error(nobodys_dir: Path, read_only: str) -> None:
    log = AuditLog(nobodys_dir / "audit.jsonl")
    if read_only == "file":
        fill(log, 1)
        os.chown(log.path, NOBODY, NOBODY)
        log.path.chmod(0o444)
    elif read_only == "directory":
        nobodys_dir.chmod(0o555)
    outcome = _as_nobody(log.path)
    if read_only == "nothing":  # the control: the same user can append when nothing is read-only
        assert outcome == "appended"
        assert log.verify().records == 1
    else:
        assert outcome.startswith(f"cannot write the audit log {log.path}: Permission denied"), outcome
        assert log.verify().records == (1 if read_only == "file" else 0)


def _append_under_file_size_limit(path: str, limit: int) -> str:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        AuditLog(Path(path)).append("step_started", deployment_id="d1", actor="ops", step="pull")
    except AuditError as e:
        return str(e)
    return "appended"


@pytest.mark.parametrize(("room", "reason"), [(0, "File too large"), (40, "short write")])
def test_a_failed_write_raises_audit_error_and_leaves_the_log_intact(log: AuditLog, room: int, reason: str) -> None:
    # Even root cannot write past RLIMIT_FSIZE: a write that fails, or stops halfway, for real.
    size = log.path.stat().st_size
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcome = pool.submit(_append_under_file_size_limit, str(log.path), size + room).result(timeout=60)
    assert outcome == f"cannot write the audit log {log.path}: {reason}"
    assert log.path.stat().st_size == size
    assert log.verify().records == 5
