"""The ledger: state caught up from the audit log, and the sparse index that /v1/audit reads from."""

from __future__ import annotations

import json
from pathlib import Path

from agent.auditlog import AuditLog
from agent.ledger import INDEX_EVERY, Ledger


def test_offset_before_a_seq_starts_at_or_before_that_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    ledger = Ledger(log)
    for n in range(1, 2 * INDEX_EVERY + 500 + 1):
        log.append("deploy_refused", deployment_id=None, actor="ops", environment="dev", reason=[f"r{n}"])
        if n % 150 == 0:  # catch up now and then, as requests do, so batches start at odd places
            ledger.read(lambda s: None)
    ledger.read(lambda s: None)
    raw = log.path.read_bytes()
    for seq in (1, 2, INDEX_EVERY, INDEX_EVERY + 1, 2 * INDEX_EVERY + 7, 2 * INDEX_EVERY + 500):
        offset = ledger.offset_before(seq)
        first = json.loads(raw[offset:].split(b"\n", 1)[0])
        assert first["seq"] <= seq
        assert seq - first["seq"] < INDEX_EVERY + 100  # it skips the rest: the index is not only the start
    assert ledger.offset_before(2 * INDEX_EVERY + 400) > 0


def test_a_shrunk_log_is_broken(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    ledger = Ledger(log)
    for n in range(3):
        log.append("deploy_refused", deployment_id=None, actor="ops", environment=None, reason=[str(n)])
    assert ledger.read(lambda s: s.last_seq) == 3
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:2]))
    ledger.read(lambda s: None)
    assert ledger.broken is not None and "records were removed" in ledger.broken
