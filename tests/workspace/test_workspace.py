"""Workspace creation, sealing round trips, permissions, sessions, rotation and shredding."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealml import Secret, Workspace
from sealml.access.sessions import SessionTicket
from sealml.crypto.kdf import FAST_PARAMS
from sealml.crypto.streaming import StreamingParams
from sealml.errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    ShreddedError,
    UsageError,
    WorkspaceExistsError,
)
from sealml.ledger import EventFilter
from sealml.store.artifacts import ArtifactDraft

from ..conftest import ADMIN_PASSWORD, DATA, PASSPHRASE, reopen

PARAMS = StreamingParams()


def modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in [root / "sealml.toml", *(root / ".sealml").rglob("*")]
    }


def test_init_creates_private_files_and_folders(workspace: Workspace) -> None:
    for name, mode in modes(workspace.root).items():
        path = workspace.root / name
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{name} has mode {oct(mode)}"


def test_init_refuses_to_overwrite(workspace: Workspace) -> None:
    before = (workspace.root / "sealml.toml").read_bytes()
    with pytest.raises(WorkspaceExistsError):
        Workspace.init(
            workspace.root,
            passphrase=Secret("other"),
            admin_password=Secret("other-password"),
            kdf=FAST_PARAMS,
        )
    assert (workspace.root / "sealml.toml").read_bytes() == before
    assert workspace.verify_store().ok


def test_failed_init_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Workspace.init(tmp_path / "ws", passphrase=Secret("p"), admin_password=Secret("short"))
    with pytest.raises(UsageError):
        Workspace.init(tmp_path / "ws", passphrase=Secret(""), admin_password=Secret("long-enough"))
    assert not (tmp_path / "ws" / ".sealml").exists()
    assert not (tmp_path / "ws" / "sealml.toml").exists()


def test_wrong_passphrase_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    ws = Workspace.open(workspace.root, passphrase=Secret("wrong passphrase"))
    ws.login("admin", Secret(ADMIN_PASSWORD))
    with pytest.raises(AuthenticationError, match="passphrase"):
        ws.put(DATA / "german_credit.csv", "dataset")
    assert ws.ls() == []


def test_wrong_password_is_refused_and_audited(workspace: Workspace) -> None:
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError):
        ws.login("admin", Secret("not the password"))
    with pytest.raises(AuthenticationError):
        ws.login("nobody", Secret("whatever-pw"))
    denied = workspace.audit_events(EventFilter(action="auth.login", outcome="denied"))
    assert [e.fields()["principal"] for e in denied] == ["admin", "nobody"]


def test_an_unknown_user_costs_the_same_key_derivation(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the time a refusal takes does not tell which user names exist."""
    from sealml.access import principals

    calls: list[int] = []
    real = principals.derive_key

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(principals, "derive_key", counted)
    for name in ("admin", "nobody"):
        with pytest.raises(AuthenticationError):
            workspace.login(name, Secret("not the password"))
    assert len(calls) == 2


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=20000)
    | st.sampled_from(
        [
            0,
            PARAMS.first_plaintext_size,
            PARAMS.first_plaintext_size + 1,
            PARAMS.first_plaintext_size + PARAMS.plaintext_size,
        ]
    ).map(os.urandom)
)
def test_put_get_round_trip(
    workspace: Workspace, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    out = tmp_path_factory.mktemp("out") / "copy"
    info = workspace.put(io.BytesIO(data), "other", "blob")
    assert info.size == len(data)
    workspace.get(info.id, out)
    assert out.read_bytes() == data
    assert workspace.read_bytes(info.id) == data


def test_real_dataset_round_trip_and_lookup(workspace: Workspace, tmp_path: Path) -> None:
    source = DATA / "adult_train.csv.gz"
    info = workspace.put(source, "dataset", parents=[])
    assert info.name == "adult_train.csv.gz" and info.digest.startswith("blake3:")
    for ref in (info.id, info.id[:8], info.name):
        out = tmp_path / f"copy-{len(ref)}"
        workspace.get(ref, out)
        assert out.read_bytes() == source.read_bytes()
    derived = workspace.put(io.BytesIO(b"report"), "report", "summary", parents=[info.id])
    assert derived.parents == (info.id,)
    with pytest.raises(NotFoundError):
        workspace.get("no-such-artifact", tmp_path / "x")
    with pytest.raises(NotFoundError):
        workspace.put(io.BytesIO(b"r"), "report", "orphan", parents=["missing-parent"])


def test_get_refuses_to_overwrite_and_bad_targets(workspace: Workspace, tmp_path: Path) -> None:
    info = workspace.put(io.BytesIO(b"payload"), "other", "p")
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    with pytest.raises(UsageError):
        workspace.get(info.id, existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(UsageError):
        workspace.get(info.id, tmp_path / "no" / "such" / "dir" / "file")
    with pytest.raises(UsageError):
        workspace.get(info.id, tmp_path)
    workspace.get(info.id, existing, overwrite=True)
    assert existing.read_bytes() == b"payload"


def test_reader_detects_tamper_before_end(workspace: Workspace) -> None:
    info = workspace.put(io.BytesIO(os.urandom(3 << 20)), "other", "big")
    with workspace.db.read() as session:
        name = workspace._find(session, info.id).blob_name
    path = workspace.blobs.path_of(name)  # type: ignore[attr-defined]
    with path.open("r+b") as handle:
        handle.seek((2 << 20) + 7)
        handle.write(b"\x00\x00")
    with workspace.open_reader(info.id) as reader, pytest.raises(IntegrityError):
        while reader.read(1 << 16):
            pass


def test_permissions_follow_roles(workspace: Workspace, tmp_path: Path) -> None:
    data = workspace.put(io.BytesIO(b"rows"), "dataset", "rows")
    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    workspace.add_user("audrey", ["auditor"], password=Secret("audrey-password"))
    workspace.close()
    dana = reopen(workspace.root, "dana", "dana-password")
    dana.get(data.id, tmp_path / "ok")
    model = dana.put(io.BytesIO(b"weights"), "model", "m")
    with pytest.raises(PermissionDeniedError):
        dana.put(io.BytesIO(b"x"), "dataset", "not-allowed")
    with pytest.raises(PermissionDeniedError):
        dana.rotate_keys()
    with pytest.raises(PermissionDeniedError):
        dana.audit_verify()
    dana.close()
    audrey = reopen(workspace.root, "audrey", "audrey-password")
    assert {i.name for i in audrey.ls()} == {"rows", "m"}  # may verify, so may list
    assert audrey.verify(model.id).id == model.id
    with pytest.raises(PermissionDeniedError):
        audrey.get(model.id, tmp_path / "no")
    assert not (tmp_path / "no").exists()
    assert audrey.audit_verify().ok
    denials = audrey.audit_events(EventFilter(outcome="denied"))
    assert [(e.fields()["principal"], e.fields()["details"]["permission"]) for e in denials] == [
        ("dana", "dataset:write"),
        ("dana", "keys:admin"),
        ("dana", "audit:verify"),
        ("audrey", "model:read"),
    ]


def test_role_granted_by_editing_the_database_is_refused(workspace: Workspace) -> None:
    import sqlite3

    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE principals SET roles = '[\"admin\"]' WHERE name = 'dana'")
    connection.close()
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    with pytest.raises(IntegrityError, match="dana"):
        ws.login("dana", Secret("dana-password"))


def test_disabled_user_cannot_log_in_but_signatures_stay_valid(workspace: Workspace) -> None:
    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    workspace.close()
    dana = reopen(workspace.root, "dana", "dana-password")
    model = dana.put(io.BytesIO(b"weights"), "model", "m")
    ticket = dana.start_session()
    dana.close()
    admin = reopen(workspace.root)
    admin.set_user_disabled("dana", True)
    with pytest.raises(UsageError):
        admin.set_user_disabled("admin", True)
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError, match="disabled"):
        ws.login("dana", Secret("dana-password"))
    with pytest.raises(AuthenticationError):
        ws.resume_session(ticket)
    assert admin.verify(model.id).creator == "dana"


def test_sessions_expire_and_are_revocable(workspace: Workspace) -> None:
    ticket = workspace.start_session()
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    assert ws.resume_session(ticket).name == "admin"
    forged = SessionTicket(ticket.principal, os.urandom(32), ticket.key_box, ticket.expires_at)
    with pytest.raises(AuthenticationError):
        ws.resume_session(forged)
    import sqlite3

    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE sessions SET expires_at = ?", (int(time.time()) - 1,))
    connection.close()
    with pytest.raises(AuthenticationError, match="expired"):
        ws.resume_session(ticket)
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    (left,) = connection.execute("SELECT count(*) FROM sessions").fetchone()
    connection.close()
    assert left == 0  # the refused resume removed the expired row
    fresh = workspace.start_session()
    assert workspace.end_session(fresh)
    with pytest.raises(AuthenticationError):
        ws.resume_session(fresh)


def test_a_session_row_pushed_or_copied_back_in_the_database_opens_nothing(
    workspace: Workspace,
) -> None:
    """With a stolen ticket and write access to the database, neither pushing the row's
    expiry back nor restoring the row a password change deleted brings the session back."""
    import sqlite3

    database = workspace.root / ".sealml" / "sealml.db"
    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    dana = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    dana.login("dana", Secret("dana-password"))
    ticket = dana.start_session()
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("UPDATE sessions SET expires_at = expires_at + 86400")
    connection.close()
    with pytest.raises(AuthenticationError, match="run `sealml login`"):
        Workspace.open(workspace.root).resume_session(ticket)
    ticket = dana.start_session()
    connection = sqlite3.connect(database)
    saved = connection.execute(
        "SELECT token_hash, principal_id, key_share, created_at, expires_at FROM sessions "
        "WHERE expires_at = (SELECT max(expires_at) FROM sessions)"
    ).fetchone()
    connection.close()
    dana.change_password(Secret("dana-password"), Secret("dana-new-password"))
    connection = sqlite3.connect(database)
    with connection:  # the change ended the session; copy its row back
        connection.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", saved)
    connection.close()
    with pytest.raises(AuthenticationError, match="run `sealml login`"):
        Workspace.open(workspace.root).resume_session(ticket)
    with pytest.raises(AuthenticationError, match="changed since this login"):
        dana.start_session()  # nor does the login from before the change mint a new one
    dana.login("dana", Secret("dana-new-password"))
    assert Workspace.open(workspace.root).resume_session(dana.start_session()).name == "dana"


def test_service_principal_authenticates_with_its_key(workspace: Workspace) -> None:
    principal, key = workspace.add_user("scorer", ["service"], service=True)
    assert key is not None and principal.kind == "service"
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    assert ws.login_with_key("scorer", key).name == "scorer"
    from sealml.crypto.signing import SigningKey

    with pytest.raises(AuthenticationError):
        ws.login_with_key("scorer", SigningKey.generate())
    with pytest.raises(AuthenticationError):
        ws.login("scorer", Secret("no-password-for-services"))
    person = ws.login("admin", Secret(ADMIN_PASSWORD)).signing_key
    with pytest.raises(AuthenticationError, match="is a person"):
        ws.login_with_key("admin", person)  # even the right key: people use their password


def test_rotation_rewraps_without_touching_bodies(workspace: Workspace, tmp_path: Path) -> None:
    infos = [workspace.put(io.BytesIO(os.urandom(5000)), "other", f"a{i}") for i in range(3)]
    blobs = {p: p.read_bytes() for p in workspace.blobs.root.rglob("*") if p.is_file()}  # type: ignore[attr-defined]
    result = workspace.rotate_keys()
    assert result == {"kek": "local:2", "rewrapped": 3, "destroyed": ["local:1"]}
    after = {p: p.read_bytes() for p in workspace.blobs.root.rglob("*") if p.is_file()}  # type: ignore[attr-defined]
    assert after == blobs
    assert workspace.keystore.kek_ids() == ["local:2"]
    for info in infos:
        workspace.verify(info.id)
    workspace.close()
    ws = reopen(workspace.root)
    assert ws.verify_store().ok
    assert ws.rotate_keys()["kek"] == "local:3"


def test_a_process_open_across_a_rotation_seals_and_reads_under_the_new_kek(
    workspace: Workspace, tmp_path: Path
) -> None:
    """A long-running process (a server, a dashboard) keeps its keystore open while an
    administrator rotates elsewhere: what it seals afterwards must not be wrapped under the
    KEK the rotation destroyed, and what the rotation re-wrapped must still open."""
    before = workspace.put(io.BytesIO(b"sealed before"), "other", "before")
    drafted = workspace.seal_draft(
        io.BytesIO(b"wrapped before, committed after"), ArtifactDraft("other", "drafted")
    )
    assert drafted.data_key.kek_id == "local:1"
    admin = reopen(workspace.root)
    assert admin.rotate_keys()["destroyed"] == ["local:1"]
    admin.close()
    after = workspace.put(io.BytesIO(b"sealed after"), "other", "after")
    with workspace.transaction() as session:
        workspace.commit_sealed(session, drafted)
    workspace.get(before.id, tmp_path / "before")  # re-wrapped under local:2 meanwhile
    assert (tmp_path / "before").read_bytes() == b"sealed before"
    workspace.close()
    fresh = reopen(workspace.root)
    made = {after.id: b"sealed after", drafted.artifact.id: b"wrapped before, committed after"}
    for artifact_id, content in made.items():
        fresh.get(artifact_id, tmp_path / "out", overwrite=True)
        assert (tmp_path / "out").read_bytes() == content
    assert fresh.verify_store().ok


def test_a_process_that_cannot_unseal_a_new_kek_refuses_to_seal(workspace: Workspace) -> None:
    """After a passphrase change and a rotation elsewhere, a process holding the old
    passphrase's key stops sealing with a clear error; nothing half-made is recorded."""
    admin = reopen(workspace.root)
    admin.change_passphrase(Secret(PASSPHRASE), Secret("a brand new keystore passphrase"))
    admin.rotate_keys()
    admin.close()
    count = len(workspace.ls())
    with pytest.raises(AuthenticationError, match="new passphrase since this process"):
        workspace.put(io.BytesIO(b"x"), "other", "refused")
    assert len(workspace.ls()) == count


def test_shredded_content_is_gone_but_its_record_stays(
    workspace: Workspace, tmp_path: Path
) -> None:
    secret_rows = b"name,ssn\nalice,123-45-6789\n"
    info = workspace.put(io.BytesIO(secret_rows), "dataset", "subject")
    with workspace.db.read() as session:
        blob = workspace._find(session, info.id).blob_name
    shredded = workspace.shred(info.id, "erasure request")
    assert shredded.shredded_at is not None
    with pytest.raises(ShreddedError):
        workspace.get(info.id, tmp_path / "out")
    with pytest.raises(UsageError):
        workspace.shred(info.id)
    assert not workspace.blobs.exists(blob)
    database = (workspace.root / ".sealml" / "sealml.db").read_bytes()
    wal = workspace.root / ".sealml" / "sealml.db-wal"
    assert info.id.encode() in database
    with workspace.db.read() as session:
        assert (
            session.get(__import__("sealml.db.models", fromlist=["DataKeyRow"]).DataKeyRow, info.id)
            is None
        )
    assert not wal.exists() or wal.stat().st_size == 0
    report = workspace.verify_store()
    assert report.ok and [c.status for c in report.checks] == ["shredded"]
    actions = [
        e.fields()["action"]
        for e in workspace.audit_events(EventFilter(resource=f"artifact:{info.id}"))
    ]
    assert actions[0] == "artifact.put" and "artifact.shred" in actions


def test_secrets_stay_out_of_reprs(workspace: Workspace) -> None:
    import pickle

    texts = [
        repr(workspace),
        repr(workspace.actor),
        repr(workspace.keystore),
        repr(Secret(PASSPHRASE)),
    ]
    texts.append(repr(workspace.actor.signing_key))  # type: ignore[union-attr]
    for text in texts:
        assert PASSPHRASE not in text and ADMIN_PASSWORD not in text
    with pytest.raises(TypeError):
        pickle.dumps(Secret(PASSPHRASE))
    with pytest.raises(TypeError):
        pickle.dumps(workspace.actor.signing_key)  # type: ignore[union-attr]
    keystore = (workspace.root / ".sealml" / "keystore.json").read_text()
    assert PASSPHRASE not in keystore


def test_metadata_is_not_shown_to_principals_without_access(workspace: Workspace) -> None:
    data = workspace.put(io.BytesIO(b"rows"), "dataset", "salaries")
    _, key = workspace.add_user("scorer", ["service"], service=True)
    assert key is not None
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    ws.login_with_key("scorer", key)
    assert ws.ls() == []
    with pytest.raises(PermissionDeniedError):
        ws.info(data.id)
