"""The ledger in a real workspace database: every edit, deletion, reordering and rollback of
events or checkpoints is detected by `audit verify`; proofs check offline."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from sealml import Workspace
from sealml.errors import IntegrityError, UsageError
from sealml.ledger import EventFilter
from sealml.ledger.proofs import check_consistency, check_inclusion

from ..conftest import reopen


@pytest.fixture(autouse=True, params=["one-range", "worker-processes"])
def scan_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every check both in-process and with ranges scanned by worker processes."""
    import sealml.ledger.verify as verify_module

    if request.param == "worker-processes":
        monkeypatch.setattr(verify_module, "_RANGE", 3)
    return str(request.param)


def db_file(ws: Workspace) -> Path:
    return ws.root / ".sealml" / "sealml.db"


def sql(ws: Workspace, statement: str, *args: object) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(db_file(ws))
    try:
        with connection:
            return connection.execute(statement, args).fetchall()
    finally:
        connection.close()


@pytest.fixture
def busy(workspace: Workspace, tmp_path: Path) -> Workspace:
    """A workspace with a few dozen events."""
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"x" * 5000)
    for index in range(6):
        workspace.put(sample, "dataset", f"set-{index}")
    workspace.verify("set-0")
    return workspace


def verify(ws: Workspace) -> list[str]:
    return ws.audit_verify().problems


def test_clean_ledger_verifies(busy: Workspace) -> None:
    report = busy.audit_verify()
    assert report.ok and report.events == 9 and report.unanchored == 0


def test_editing_an_event_body_is_detected(busy: Workspace) -> None:
    (body,) = sql(busy, "SELECT body FROM ledger_events WHERE seq = 4")[0]
    forged = bytes(body).replace(b'"outcome":"ok"', b'"outcome":"denied"')  # type: ignore[arg-type]
    assert forged != body
    sql(busy, "UPDATE ledger_events SET body = ? WHERE seq = 4", forged)
    assert any("event 4" in p for p in verify(busy))


def test_editing_an_event_and_its_hash_is_detected(busy: Workspace) -> None:
    import hashlib

    (body,) = sql(busy, "SELECT body FROM ledger_events WHERE seq = 4")[0]
    forged = bytes(body).replace(b'"principal":"admin"', b'"principal":"eve"')  # type: ignore[arg-type]
    leaf = hashlib.sha256(b"\x00" + forged).digest()
    sql(
        busy,
        "UPDATE ledger_events SET body = ?, leaf_hash = ?, principal = 'eve' WHERE seq = 4",
        forged,
        leaf,
    )
    problems = verify(busy)
    assert any("hash chain" in p for p in problems)
    assert any("root hash differs" in p for p in problems)


def test_editing_an_indexed_column_is_detected(busy: Workspace) -> None:
    sql(busy, "UPDATE ledger_events SET principal = 'eve' WHERE seq = 3")
    assert any("column principal" in p for p in verify(busy))


def test_deleting_an_event_is_detected(busy: Workspace) -> None:
    sql(busy, "DELETE FROM ledger_events WHERE seq = 5")
    assert any("missing" in p for p in verify(busy))


def test_deleting_the_newest_events_is_detected(busy: Workspace) -> None:
    (size,) = sql(busy, "SELECT MAX(seq) FROM ledger_events")[0]
    sql(busy, "DELETE FROM ledger_events WHERE seq >= ?", int(size) - 2)  # type: ignore[call-overload]
    assert any("holds only" in p for p in verify(busy))


def test_reordering_two_events_is_detected(busy: Workspace) -> None:
    rows = sql(busy, "SELECT seq, body, leaf_hash FROM ledger_events WHERE seq IN (3, 4)")
    (s1, b1, h1), (s2, b2, h2) = rows
    sql(busy, "UPDATE ledger_events SET body = ?, leaf_hash = ? WHERE seq = ?", b2, h2, s1)
    sql(busy, "UPDATE ledger_events SET body = ?, leaf_hash = ? WHERE seq = ?", b1, h1, s2)
    assert any("reordered" in p for p in verify(busy))


def test_forged_checkpoint_is_detected(busy: Workspace) -> None:
    (size, note) = sql(busy, "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")[0]
    lines = str(note).split("\n")
    lines[2] = "A" * 43 + "="
    sql(busy, "UPDATE checkpoints SET note = ? WHERE size = ?", "\n".join(lines), size)
    assert any("checkpoint" in p for p in verify(busy))


def test_rolled_back_database_is_caught_by_the_witness(busy: Workspace, tmp_path: Path) -> None:
    """An older copy of the database, with its own valid older checkpoint, is presented as
    current: the witness kept outside the workspace proves the ledger went backwards."""
    backup = tmp_path / "old.db"
    busy.close()
    shutil.copy(db_file(busy), backup)
    ws = reopen(busy.root)
    ws.put(tmp_path / "sample.bin", "dataset", "after-backup")
    ws.close()
    shutil.copy(backup, db_file(busy))
    Path(str(db_file(busy)) + "-wal").unlink(missing_ok=True)
    Path(str(db_file(busy)) + "-shm").unlink(missing_ok=True)
    rolled_back = reopen(busy.root)
    problems = verify(rolled_back)
    assert any("trusted checkpoint" in p and "rolled back" in p for p in problems)


def test_saved_checkpoint_detects_rollback_even_without_witness(
    busy: Workspace, tmp_path: Path, isolated_env: Path
) -> None:
    backup = tmp_path / "old.db"
    busy.close()
    shutil.copy(db_file(busy), backup)
    ws = reopen(busy.root)
    ws.put(tmp_path / "sample.bin", "dataset", "after-backup")
    saved = ws.audit_checkpoint()
    ws.close()
    shutil.copy(backup, db_file(busy))
    shutil.rmtree(isolated_env / "witness")
    rolled_back = reopen(busy.root)
    assert rolled_back.audit_verify().ok  # consistent in itself...
    assert not rolled_back.audit_verify([saved]).ok  # ...but not with what the user kept
    with pytest.raises(Exception, match="rolled back"):
        rolled_back.audit_consistency(saved)


def test_inclusion_proof_verifies_offline_and_detects_edits(busy: Workspace) -> None:
    events = busy.audit_events(EventFilter(action="artifact.put"))
    proof = busy.audit_prove(events[2].seq)
    fields, checkpoint = check_inclusion(proof, busy.verifier)
    assert fields["seq"] == events[2].seq and checkpoint.size > fields["seq"]
    data = json.loads(proof)
    data["event"] = data["event"].replace("admin", "eve")
    with pytest.raises(IntegrityError):
        check_inclusion(json.dumps(data), busy.verifier)
    data = json.loads(proof)
    data["hashes"][0] = data["hashes"][1]
    with pytest.raises(IntegrityError):
        check_inclusion(json.dumps(data), busy.verifier)
    for broken in ("{", "[" * 100_000, '{"format": 1}'):  # the deep one crashed json
        with pytest.raises(UsageError):
            check_inclusion(broken, busy.verifier)


def test_consistency_proof_between_checkpoints(busy: Workspace, tmp_path: Path) -> None:
    old = busy.audit_checkpoint()
    busy.put(tmp_path / "sample.bin", "dataset", "later")
    proof = busy.audit_consistency(old)
    before, after = check_consistency(proof, busy.verifier)
    assert before.size < after.size
    data = json.loads(proof)
    data["hashes"] = data["hashes"][:-1]
    with pytest.raises(IntegrityError):
        check_consistency(json.dumps(data), busy.verifier)


def test_events_record_denials(busy: Workspace) -> None:
    busy.add_user("vic", ["auditor"], password=__import__("sealml").Secret("auditor-pass"))
    busy.close()
    auditor = reopen(busy.root, "vic", "auditor-pass")
    with pytest.raises(Exception, match="permission denied"):
        auditor.get("set-0", busy.root / "copy")
    denied = auditor.audit_events(EventFilter(outcome="denied"))
    assert [e.fields()["principal"] for e in denied] == ["vic"]
    assert denied[0].fields()["details"]["permission"] == "dataset:read"
