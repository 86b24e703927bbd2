"""`sealml keys rotate-workspace-key`: the key that signs checkpoints, principal records,
the approved policy and API keys is replaced; what it signed before stays verifiable
through the handover both keys sign, and nobody without the old key can make one."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.db.models import CheckpointRow
from sealml.errors import IntegrityError, UsageError
from sealml.ledger import EventFilter, NoteVerifier, open_note
from sealml.workspace import apikeys as apikey_ops
from sealml.workspace import keyops
from sealml.workspace.core import SIGNING_NEXT_SECRET, SIGNING_SECRET

from ..conftest import admin_env, reopen

DANA = "dana-password-1"


def _configured(root: Path) -> NoteVerifier:
    return Workspace.open(root).verifier


def _keystore_secrets(root: Path) -> set[str]:
    return set(json.loads((root / ".sealml" / "keystore.json").read_text())["secrets"])


def _signature_lines(note: str) -> int:
    return note.count("\n\u2014 ")


@pytest.fixture
def busy(workspace: Workspace) -> Workspace:
    """A workspace with a second person, an API key, an artifact and a saved checkpoint."""
    workspace.add_user("dana", ["data-scientist"], password=Secret(DANA))
    workspace.create_api_key("billing", scopes=["predict"], models=["credit"])
    workspace.put(io.BytesIO(b"age,income\n41,52000\n"), "dataset", "rows")
    return workspace


def test_a_rotation_keeps_everything_verifiable(busy: Workspace, tmp_path: Path) -> None:
    root = busy.root
    saved = busy.audit_checkpoint()
    old = busy.verifier
    result = busy.rotate_workspace_key()
    assert result["principals"] == 2 and result["api_keys"] == 1 and not result["in_token"]
    new = NoteVerifier.decode(result["verifier"])
    assert new != old and result["previous"] == old.encode()
    assert _configured(root) == new
    assert _keystore_secrets(root) >= {SIGNING_SECRET} and SIGNING_NEXT_SECRET not in (
        _keystore_secrets(root)
    )
    busy.put(io.BytesIO(b"after"), "other", "after")  # signs with the new key at once
    busy.close()

    ws = reopen(root)
    [handover] = ws.audit_events(EventFilter(action="keys.workspace-key"))
    with ws.db.read() as session:
        notes = {row.size: row.note for row in session.query(CheckpointRow)}
    both = notes[handover.seq + 1]
    assert _signature_lines(both) == 2  # the old key vouches for the new one
    assert open_note(both, old) == open_note(both, new)
    latest = notes[max(notes)]
    assert _signature_lines(latest) == 1 and open_note(latest, new)
    with pytest.raises(IntegrityError):
        open_note(latest, old)
    report = ws.audit_verify([saved])  # a checkpoint saved under the old key still counts
    assert report.ok, report.problems
    assert ws.audit_consistency(saved)
    assert [k.verified for k in ws.api_keys()] == [True]
    assert (
        reopen(root, "dana", DANA).require_actor().name == "dana"
    )  # principal records attested anew
    assert ws.rotate_workspace_key()["previous"] == new.encode()  # and again: a chain
    assert ws.audit_verify([saved]).ok
    ws.close()


def test_nothing_unverified_is_laundered(busy: Workspace) -> None:
    """A principal row altered in the database is not signed again by the new key: the
    rotation refuses and changes nothing."""
    root, before = busy.root, busy.verifier
    connection = sqlite3.connect(root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE principals SET roles = '[\"admin\"]' WHERE name = 'dana'")
    connection.close()
    with pytest.raises(IntegrityError, match="dana"):
        busy.rotate_workspace_key()
    assert _configured(root) == before
    assert SIGNING_NEXT_SECRET not in _keystore_secrets(root)
    assert not (root / ".sealml" / "workspace-key-rotation").exists()


def test_an_interruption_after_the_commit_is_finished_at_the_next_opening(
    busy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, old = busy.root, busy.verifier

    def lost_power(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(keyops, "set_options", lost_power)
        with pytest.raises(KeyboardInterrupt):
            busy.rotate_workspace_key()
    busy.close()
    assert (root / ".sealml" / "workspace-key-rotation").exists()
    ws = reopen(root)  # finishes: sealml.toml takes the key the ledger handed over to
    assert ws.verifier != old and _configured(root) == ws.verifier
    assert not (root / ".sealml" / "workspace-key-rotation").exists()
    ws.put(io.BytesIO(b"after"), "other", "after")  # unlocks: the staged key is promoted
    assert SIGNING_NEXT_SECRET not in _keystore_secrets(root)
    assert ws.audit_verify().ok
    assert reopen(root, "dana", DANA).require_actor().name == "dana"
    ws.close()


def test_an_interruption_before_the_commit_changes_nothing(
    busy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, old = busy.root, busy.verifier

    def lost_power(*args: Any) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(apikey_ops, "attest_again", lost_power)
        with pytest.raises(KeyboardInterrupt):
            busy.rotate_workspace_key()
    assert busy.verifier == old and _configured(root) == old
    assert SIGNING_NEXT_SECRET not in _keystore_secrets(root)
    busy.close()
    ws = reopen(root)
    assert ws.audit_verify().ok and not ws.audit_events(EventFilter(action="keys.workspace-key"))
    ws.close()


def test_a_process_open_across_a_rotation_follows_it(busy: Workspace) -> None:
    """A server or dashboard that opened before: its writes are not anchored by the old
    key, it takes up the new key from the ledger's handover, and carries on."""
    root = busy.root
    busy.keystore  # noqa: B018 (unlocked, as a sealing process is)
    admin = reopen(root)
    admin.rotate_workspace_key()
    admin.close()
    busy.put(io.BytesIO(b"written by the process that opened before"), "other", "late")
    assert busy.verifier == _configured(root)
    busy.reload_policy()
    assert [k.verified for k in busy.api_keys()] == [True]
    assert busy.audit_verify().ok
    busy.close()


def test_a_rolled_back_copy_from_before_the_rotation_is_caught(
    busy: Workspace, tmp_path: Path
) -> None:
    """Someone puts back the database and sealml.toml from before a rotation (every old
    checkpoint validly signed by the old key): the witness holds a note by the new key."""
    root = busy.root
    database = root / ".sealml" / "sealml.db"
    kept = tmp_path / "kept"
    kept.mkdir()
    with sqlite3.connect(database) as live, sqlite3.connect(kept / "sealml.db") as copy:
        live.backup(copy)
    shutil.copy2(root / "sealml.toml", kept / "sealml.toml")
    busy.rotate_workspace_key()
    busy.put(io.BytesIO(b"after"), "other", "after")
    busy.close()
    for leftover in database.parent.glob("sealml.db*"):
        leftover.unlink()
    shutil.copy2(kept / "sealml.db", database)
    shutil.copy2(kept / "sealml.toml", root / "sealml.toml")
    ws = reopen(root)
    report = ws.audit_verify()
    assert not report.ok
    assert any("witnessed checkpoint does not verify" in p for p in report.problems)
    ws.close()


def test_a_handover_without_the_old_keys_signature_is_refused(busy: Workspace) -> None:
    root = busy.root
    busy.rotate_workspace_key()
    busy.close()
    connection = sqlite3.connect(root / ".sealml" / "sealml.db")
    with connection:
        (seq,) = connection.execute(
            "SELECT seq FROM ledger_events WHERE action = 'keys.workspace-key'"
        ).fetchone()
        (note,) = connection.execute(
            "SELECT note FROM checkpoints WHERE size = ?", (seq + 1,)
        ).fetchone()
        head, _, signatures = note.rpartition("\n\n")
        only_new = head + "\n\n" + signatures.split("\n")[1] + "\n"
        connection.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (only_new, seq + 1))
    connection.close()
    ws = reopen(root)
    report = ws.audit_verify()
    assert any(f"checkpoint at size {seq + 1}" in p for p in report.problems)
    ws.close()


def test_the_index_of_rotations_must_match_the_ledger(busy: Workspace) -> None:
    """Reading the history uses an index of rotation events; `audit verify` checks it
    against every event, so deleting the index (to hide a rotation) is reported."""
    root = busy.root
    busy.rotate_workspace_key()
    busy.close()
    connection = sqlite3.connect(root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("DELETE FROM workspace_meta WHERE key = 'workspace_key_rotations'")
    connection.close()
    ws = reopen(root)
    report = ws.audit_verify()
    assert any("index of workspace key rotations" in p for p in report.problems)
    ws.close()


def test_cli(cli: Any, ws_path: Path) -> None:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    before = cli("audit", "vkey", env=admin_env()).stdout.strip()
    refused = cli("keys", "rotate-workspace-key", "--in-token", env=admin_env())
    assert refused.code == 2 and "keys migrate" in refused.stderr
    done = cli("keys", "rotate-workspace-key", "--json", env=admin_env())
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["previous"] == before
    assert cli("audit", "vkey", env=admin_env()).stdout.strip() == result["verifier"]
    shown = json.loads(cli("keys", "show", "--json", env=admin_env()).stdout)
    assert shown["rotations"] == 1 and shown["verifier"] == result["verifier"]
    assert shown["provider"] == "local" and not shown["workspace_key_in_token"]
    text = cli("keys", "show", env=admin_env()).stdout
    assert "workspace key: in the keystore" in text and "1 rotation(s)" in text
    assert cli("audit", "verify", env=admin_env()).code == 0
    assert (ws_path / "sealml.toml").stat().st_mode & 0o777 == 0o600


def test_a_forged_rotation_is_not_followed(busy: Workspace) -> None:
    """Someone who can write sealml.toml and the database, but holds no key in force,
    records a rotation to a key of their own: a running process refuses to take it up
    (the handover lacks the signature of the key it trusts)."""
    from sealml.config import set_options
    from sealml.crypto.signing import SigningKey
    from sealml.db.models import LedgerHeadRow
    from sealml.db.raw import insert_rows
    from sealml.ledger import Checkpoint, EventDraft, NoteSigner
    from sealml.ledger.keyhistory import ROTATION, note_rotation
    from sealml.ledger.merkle import Frontier

    root, trusted = busy.root, busy.verifier
    forger = NoteSigner(trusted.name, SigningKey.generate("ed25519"))
    with busy.db.write() as session:
        drafts = [
            EventDraft(
                "admin",
                ROTATION,
                "keys",
                "ok",
                {"previous": trusted.encode(), "verifier": forger.verifier.encode()},
            )
        ]
        (seq,) = busy.ledger.append(session, drafts)
        note_rotation(session, seq)
        head = session.get(LedgerHeadRow, 1)
        assert head is not None
        root_hash = Frontier.from_bytes(head.size, head.frontier).root()
        note = Checkpoint(busy.config.ledger.origin, head.size, root_hash).sign(forger)
        insert_rows(
            session, [CheckpointRow(size=head.size, root=root_hash, note=note, created_at="x")]
        )
    set_options(root / "sealml.toml", "ledger", {"verifier_key": forger.verifier.encode()})
    with pytest.raises(IntegrityError, match="not signed by"):
        busy.reload_policy()
    assert busy.verifier == trusted
    busy.close()


def test_a_staged_key_left_in_the_keystore_is_destroyed_by_the_next_rotation(
    busy: Workspace,
) -> None:
    """A rotation killed before its commit (no chance to clean up) leaves its staged key
    in the keystore; it is never used, and the next rotation removes it."""
    from sealml.crypto.signing import SigningKey

    stray = SigningKey.generate("ed25519")
    busy.keystore.store_secret(SIGNING_NEXT_SECRET, stray.pkcs8_der())
    assert busy.key_summary()["superseded_workspace_keys"] == 1
    busy.rotate_workspace_key()
    assert _keystore_secrets(busy.root) >= {SIGNING_SECRET}
    assert SIGNING_NEXT_SECRET not in _keystore_secrets(busy.root)
    assert busy.verifier.key != stray.public_key
    assert busy.audit_verify().ok


def test_two_rotations_at_once_are_refused(busy: Workspace) -> None:
    marker = busy.root / ".sealml" / "workspace-key-rotation"
    marker.write_text("another process's staged key")
    old = busy.verifier
    with pytest.raises(UsageError, match="under way"):
        busy.rotate_workspace_key()
    assert busy.verifier == old and marker.exists()
