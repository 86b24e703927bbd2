"""Flip real bytes on disk in every region of a sealed artifact; each is refused."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from sealml import Workspace
from sealml.db.models import ArtifactRow
from sealml.errors import IntegrityError
from sealml.store.blobs import LocalBlobStore

MIB = 1 << 20
HEADER = 40


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(3 * MIB + 12345))  # four segments
    return path


def blob_path(ws: Workspace, ref: str) -> Path:
    with ws.db.read() as session:
        row = ws._find(session, ref)
        name = row.blob_name
    assert isinstance(ws.blobs, LocalBlobStore)
    return ws.blobs.path_of(name)


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x80]))


def sql(ws: Workspace, statement: str, *args: object) -> None:
    connection = sqlite3.connect(ws.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute(statement, args)
    connection.close()


def assert_refused(ws: Workspace, ref: str, out: Path) -> None:
    with pytest.raises(IntegrityError):
        ws.get(ref, out)
    assert not out.exists(), "a failed unseal must leave no output"
    with pytest.raises(IntegrityError):
        ws.verify(ref)
    assert not ws.verify_store().ok


REGIONS: dict[str, Callable[[int], int]] = {
    "header-length-byte": lambda size: 0,
    "header-salt": lambda size: 10,
    "header-nonce-prefix": lambda size: 36,
    "first-segment-body": lambda size: HEADER + 100,
    "first-segment-tag": lambda size: MIB - 5,
    "middle-segment": lambda size: MIB + MIB // 2,
    "middle-segment-tag": lambda size: 2 * MIB - 1,
    "last-segment": lambda size: size - 200,
    "last-tag": lambda size: size - 1,
}


@pytest.mark.parametrize("region", list(REGIONS))
def test_flipped_byte_in_blob_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path, region: str
) -> None:
    info = workspace.put(payload, "dataset")
    blob = blob_path(workspace, info.id)
    flip(blob, REGIONS[region](blob.stat().st_size))
    assert_refused(workspace, info.id, tmp_path / "out.bin")


@pytest.mark.parametrize(
    "cut",
    [1, 16, 17, 2 * MIB + 12345 + 48, None],
    ids=["1", "tag", "tag+1", "segment", "to-header"],
)
def test_truncated_blob_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path, cut: int | None
) -> None:
    info = workspace.put(payload, "dataset")
    blob = blob_path(workspace, info.id)
    size = blob.stat().st_size
    with blob.open("r+b") as handle:
        handle.truncate(HEADER if cut is None else size - cut)
    assert_refused(workspace, info.id, tmp_path / "out.bin")


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(MIB)], ids=["byte", "segment"])
def test_appended_blob_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path, extra: bytes
) -> None:
    info = workspace.put(payload, "dataset")
    with blob_path(workspace, info.id).open("ab") as handle:
        handle.write(extra)
    assert_refused(workspace, info.id, tmp_path / "out.bin")


def test_swapped_blobs_are_refused(workspace: Workspace, payload: Path, tmp_path: Path) -> None:
    first = workspace.put(payload, "dataset", "first")
    second = workspace.put(payload, "dataset", "second")  # same plaintext, same size
    a, b = blob_path(workspace, first.id), blob_path(workspace, second.id)
    scratch = tmp_path / "scratch"
    shutil.move(a, scratch)
    shutil.move(b, a)
    shutil.move(scratch, b)
    assert_refused(workspace, first.id, tmp_path / "out1.bin")
    assert_refused(workspace, second.id, tmp_path / "out2.bin")


def test_missing_blob_is_refused(workspace: Workspace, payload: Path, tmp_path: Path) -> None:
    info = workspace.put(payload, "dataset")
    blob_path(workspace, info.id).unlink()
    assert_refused(workspace, info.id, tmp_path / "out.bin")


def test_flipped_wrapped_key_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path
) -> None:
    info = workspace.put(payload, "dataset")
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    (wrapped,) = connection.execute(
        "SELECT wrapped FROM data_keys WHERE artifact_id = ?", (info.id,)
    ).fetchone()
    connection.close()
    damaged = bytearray(wrapped)
    damaged[20] ^= 0x01
    sql(
        workspace, "UPDATE data_keys SET wrapped = ? WHERE artifact_id = ?", bytes(damaged), info.id
    )
    assert_refused(workspace, info.id, tmp_path / "out.bin")


def test_wrapped_keys_swapped_between_artifacts_are_refused(
    workspace: Workspace, payload: Path, tmp_path: Path
) -> None:
    first = workspace.put(payload, "dataset", "first")
    second = workspace.put(payload, "dataset", "second")
    sql(
        workspace,
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE artifact_id = ?) "
        "WHERE artifact_id = ?",
        second.id,
        first.id,
    )
    assert_refused(workspace, first.id, tmp_path / "out.bin")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("name", "renamed"),
        ("kind", "other"),
        ("size", 1),
        ("creator", "eve"),
        ("digest", "blake3:00"),
    ],
)
def test_edited_metadata_row_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path, column: str, value: object
) -> None:
    info = workspace.put(payload, "dataset")
    sql(workspace, f"UPDATE artifacts SET {column} = ? WHERE id = ?", value, info.id)
    with pytest.raises(IntegrityError):
        workspace.get(info.id, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert not workspace.verify_store().ok


def test_edited_signed_statement_is_refused(
    workspace: Workspace, payload: Path, tmp_path: Path
) -> None:
    info = workspace.put(payload, "dataset")
    with workspace.db.read() as session:
        row = session.get(ArtifactRow, info.id)
        assert row is not None
        statement = row.statement.replace(b'"kind":"dataset"', b'"kind":"report"')
    sql(
        workspace,
        "UPDATE artifacts SET statement = ?, kind = 'report' WHERE id = ?",
        statement,
        info.id,
    )
    with pytest.raises(IntegrityError, match="signature"):
        workspace.get(info.id, tmp_path / "out.bin")


def test_deleted_metadata_row_is_detected(workspace: Workspace, payload: Path) -> None:
    info = workspace.put(payload, "dataset")
    sql(workspace, "DELETE FROM data_keys WHERE artifact_id = ?", info.id)
    sql(workspace, "DELETE FROM artifacts WHERE id = ?", info.id)
    report = workspace.verify_store()
    assert not report.ok
    assert any(info.id in problem and "missing" in problem for problem in report.problems)


def test_metadata_row_without_ledger_event_is_detected(workspace: Workspace, payload: Path) -> None:
    info = workspace.put(payload, "dataset")
    sql(workspace, "DELETE FROM ledger_events WHERE action = 'artifact.put'")
    with pytest.raises(IntegrityError, match="ledger"):
        workspace.verify(info.id)


def test_untouched_artifact_still_verifies_beside_a_damaged_one(
    workspace: Workspace, payload: Path
) -> None:
    good = workspace.put(payload, "dataset", "good")
    bad = workspace.put(payload, "dataset", "bad")
    flip(blob_path(workspace, bad.id), MIB)
    report = workspace.verify_store()
    status = {check.info.name: check.status for check in report.checks}
    assert status == {"good": "ok", "bad": "failed"}
    assert workspace.verify(good.id).id == good.id
