"""Records anchored in the ledger's checkpoints: a principal row (or TOTP secret) copied back
from an older copy of the database verifies by its signature but is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.errors import AuthenticationError, IntegrityError
from sealml.ledger import Ledger

from ..conftest import PASSPHRASE, admin_env, reopen

DANA = "dana-password"
COLUMNS = ("roles", "public_key", "key_box", "kdf", "disabled", "record", "attestation")


@pytest.fixture
def dana(workspace: Workspace) -> Path:
    workspace.add_user("dana", ["data-scientist"], password=Secret(DANA))
    return workspace.root


def _database(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / ".sealml" / "sealml.db")


def _row(root: Path, name: str) -> dict[str, Any]:
    connection = _database(root)
    values = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM principals WHERE name = ?", (name,)
    ).fetchone()
    connection.close()
    return dict(zip(COLUMNS, values, strict=True))


def _put_back(root: Path, name: str, row: dict[str, Any]) -> None:
    connection = _database(root)
    with connection:
        assignments = ", ".join(f"{column} = ?" for column in row)
        connection.execute(
            f"UPDATE principals SET {assignments} WHERE name = ?", (*row.values(), name)
        )
    connection.close()


def _sql(root: Path, statement: str, *params: object) -> list[tuple[Any, ...]]:
    connection = _database(root)
    with connection:
        rows = connection.execute(statement, params).fetchall()
    connection.close()
    return rows


def test_every_checkpoint_anchors_the_attested_state(workspace: Workspace, dana: Path) -> None:
    with workspace.db.read() as session:
        note = Ledger.latest_checkpoint(session)
    assert note is not None
    body = note.note.split("\n\n")[0].split("\n")
    assert len(body) == 4 and body[3].startswith("sealml-attested ")
    assert workspace.audit_verify().ok


def test_a_row_restored_from_before_a_disable_is_refused(workspace: Workspace, dana: Path) -> None:
    enabled = _row(dana, "dana")
    workspace.set_user_disabled("dana", True)
    _put_back(dana, "dana", enabled)  # validly signed, but from before the disable
    with pytest.raises(IntegrityError, match="'dana' is not as the ledger's latest checkpoint"):
        reopen(dana, "dana", DANA)
    with pytest.raises(IntegrityError, match="dana"):
        workspace.users()
    report = workspace.audit_verify()
    assert any("principal 'dana'" in problem for problem in report.problems)
    # Other principals are unaffected, and an admin sets the row again.
    workspace.set_user_disabled("dana", True)
    assert workspace.audit_verify().ok
    with pytest.raises(AuthenticationError, match="disabled"):
        reopen(dana, "dana", DANA)


def test_an_older_password_copied_back_does_not_log_in(workspace: Workspace, dana: Path) -> None:
    before = _row(dana, "dana")
    with reopen(dana, "dana", DANA) as ws:
        ws.change_password(Secret(DANA), Secret("dana-new-password"))
    _put_back(dana, "dana", {"key_box": before["key_box"], "kdf": before["kdf"]})
    with pytest.raises(IntegrityError, match="'dana'"):
        reopen(dana, "dana", DANA)


def test_a_deleted_second_factor_is_refused(workspace: Workspace, dana: Path) -> None:
    with reopen(dana, "dana", DANA) as ws:
        ws.totp_enroll()
    _sql(dana, "DELETE FROM totp_secrets")
    with pytest.raises(IntegrityError, match="'dana'"):
        reopen(dana, "dana", DANA)
    reopen(dana).close()  # other principals are unaffected


def test_an_edited_attested_state_is_refused(workspace: Workspace, dana: Path) -> None:
    ((value,),) = _sql(dana, "SELECT value FROM workspace_meta WHERE key = 'attested_state'")
    edited = value.replace('"principals":{"', '"principals":{"0', 1)
    assert edited != value
    _sql(dana, "UPDATE workspace_meta SET value = ? WHERE key = 'attested_state'", edited)
    with pytest.raises(IntegrityError, match="attested state"):
        reopen(dana, "dana", DANA)
    with pytest.raises(IntegrityError, match="attested state"):
        workspace.set_user_disabled("dana", True)  # nor is it signed into a new checkpoint


def test_deleting_the_checkpoints_since_does_not_hide_a_restored_row(
    workspace: Workspace, dana: Path
) -> None:
    """Restoring the row, the state and the checkpoints of before the disable would pass
    against the database alone; the local witness holds the newer checkpoint."""
    enabled = _row(dana, "dana")
    ((state,),) = _sql(dana, "SELECT value FROM workspace_meta WHERE key = 'attested_state'")
    ((size,),) = _sql(dana, "SELECT max(size) FROM checkpoints")
    workspace.set_user_disabled("dana", True)
    workspace.close()
    _put_back(dana, "dana", enabled)
    _sql(dana, "UPDATE workspace_meta SET value = ? WHERE key = 'attested_state'", state)
    _sql(dana, "DELETE FROM checkpoints WHERE size > ?", size)
    with pytest.raises(IntegrityError, match="attested state"):
        reopen(dana, "dana", DANA)


def test_a_forged_latest_checkpoint_still_lets_the_auditor_in(
    workspace: Workspace, dana: Path
) -> None:
    (size, note), *_ = _sql(dana, "SELECT size, note FROM checkpoints ORDER BY size DESC")
    lines = str(note).split("\n")
    lines[2] = "A" * 43 + "="
    _sql(dana, "UPDATE checkpoints SET note = ? WHERE size = ?", "\n".join(lines), size)
    with reopen(dana) as admin:  # the witness and older checkpoints still anchor the state
        report = admin.audit_verify()
    assert any(f"checkpoint at size {size}" in problem for problem in report.problems)
    ws = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    ws.login("dana", Secret(DANA))
    ws.close()


def test_the_cli_refuses_a_restored_row_in_one_line(
    workspace: Workspace, dana: Path, cli: Any
) -> None:
    enabled = _row(dana, "dana")
    workspace.set_user_disabled("dana", True)
    _put_back(dana, "dana", enabled)
    result = cli("whoami", env=admin_env(SEALML_USER="dana", SEALML_PASSWORD=DANA))
    assert result.code == 1
    assert "'dana' is not as the ledger's latest checkpoint anchors it" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    audit = cli("audit", "verify", env=admin_env())
    assert audit.code == 1 and "principal 'dana'" in audit.stdout + audit.stderr


def test_a_read_that_began_before_a_change_is_not_taken_for_a_rollback(
    workspace: Workspace, dana: Path
) -> None:
    """SQLite reads a snapshot: a principal change committed (and witnessed) meanwhile by
    another process is not there yet, and that is no tampering."""
    other = reopen(dana)
    with other.db.read() as session:
        assert Ledger.size(session) > 0  # the snapshot starts here
        workspace.set_user_roles("dana", ["auditor"])
        assert other.principals.get(session, "dana").roles == ("data-scientist",)
    with other.db.read() as session:
        assert other.principals.get(session, "dana").roles == ("auditor",)
    other.close()


def test_a_change_without_a_checkpoint_is_not_committed(workspace: Workspace, dana: Path) -> None:
    refused = pytest.raises(RuntimeError, match="without a ledger checkpoint")
    with refused, workspace.db.write() as session:
        workspace.principals.set_roles(session, "dana", ["auditor"])
    with workspace.db.read() as session:  # rolled back, and still readable
        assert workspace.principals.get(session, "dana").roles == ("data-scientist",)


def test_audit_verify_reports_a_deleted_checkpoint_this_user_witnessed(
    workspace: Workspace, dana: Path
) -> None:
    ((size,),) = _sql(dana, "SELECT max(size) FROM checkpoints")
    workspace.record([workspace.event("test.after", "x")])  # the witness moves past it too
    _sql(dana, "DELETE FROM checkpoints WHERE size = ?", size)
    saved = [note for (note,) in _sql(dana, "SELECT note FROM checkpoints")]
    assert saved  # others remain, so nothing else is missing
    report = workspace.audit_verify()
    assert not any(f"size {size} is missing" in p for p in report.problems)  # not witnessed
    ((latest,),) = _sql(dana, "SELECT max(size) FROM checkpoints")
    _sql(dana, "DELETE FROM checkpoints WHERE size = ?", latest)
    report = workspace.audit_verify()
    assert any(f"size {latest} is missing" in p for p in report.problems), report.problems


def test_a_workspace_from_before_anchoring_is_anchored_by_its_next_checkpoint(
    ws_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints written by an earlier sealml carry no attested-state line: nothing is
    checked until the next checkpoint anchors the records as they are."""
    from sealml.crypto.kdf import FAST_PARAMS
    from sealml.workspace.core import WorkspaceCore

    with monkeypatch.context() as earlier:

        def no_line(self: WorkspaceCore, session: Any) -> list[str]:
            session.info.clear()  # nor anything to anchor
            return []

        earlier.setattr(WorkspaceCore, "_checkpoint_extensions", no_line)
        ws = Workspace.init(
            ws_path, passphrase=Secret(PASSPHRASE), admin_password=Secret("admin-password-1"),
            kdf=FAST_PARAMS,
        )  # fmt: skip
        ws.add_user("dana", ["data-scientist"], password=Secret(DANA))
        ws.close()
    assert not _sql(ws_path, "SELECT value FROM workspace_meta WHERE key = 'attested_state'")
    enabled = _row(ws_path, "dana")
    with reopen(ws_path) as admin:  # reads check nothing yet; this write anchors
        admin.set_user_disabled("dana", True)
    assert _sql(ws_path, "SELECT value FROM workspace_meta WHERE key = 'attested_state'")
    _put_back(ws_path, "dana", enabled)
    with pytest.raises(IntegrityError, match="'dana'"):
        reopen(ws_path, "dana", DANA)
