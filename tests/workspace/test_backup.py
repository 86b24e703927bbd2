"""`sealml backup` / `sealml restore`: a whole workspace round-trips, and a backup that is
changed, cut, forged, decrypted with the wrong passphrase or would roll the ledger back
is refused without leaving anything behind."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS, derive_key, new_salt
from sealml.crypto.streaming import EncryptingWriter, StreamingParams
from sealml.workspace import backup as backups

from ..conftest import PASSPHRASE, admin_env, reopen

BIG = os.urandom(3 * (1 << 20) + 123)  # several stream segments


@pytest.fixture
def archive(workspace: Workspace, tmp_path: Path, cli: Any) -> Path:
    workspace.put(io.BytesIO(BIG), "dataset", "big")
    workspace.put(io.BytesIO(b"age,income\n41,52000\n"), "dataset", "small")
    workspace.close()
    path = tmp_path / "ws.backup"
    made = cli("backup", str(path), "--json", env=admin_env())
    assert made.code == 0, made.stderr
    assert json.loads(made.stdout)["artifacts"] == 2
    return path


def _restore(cli: Any, archive: Path, folder: Path, *extra: str, **env: str) -> Any:
    return cli("restore", str(archive), str(folder), *extra, env=admin_env(**env))


def _nothing_left(folder: Path) -> None:
    assert not folder.exists()
    assert not [p for p in folder.parent.iterdir() if ".restoring-" in p.name]


def test_round_trip(archive: Path, tmp_path: Path, cli: Any) -> None:
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert BIG[:64] not in archive.read_bytes()  # encrypted
    target = tmp_path / "restored"
    result = _restore(cli, archive, target, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back_events"] == 0
    for path in [target, *target.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    env = admin_env(SEALML_WORKSPACE=str(target))
    assert cli("verify", "--all", env=env).code == 0
    assert cli("audit", "verify", env=env).code == 0
    assert cli("get", "big", "-o", str(tmp_path / "big"), env=env).code == 0
    assert (tmp_path / "big").read_bytes() == BIG
    restored = cli("audit", "show", "--action", "workspace.*", "--json", env=env).stdout
    assert "workspace.backup" in restored and "workspace.restore" in restored


def test_backup_refusals(archive: Path, workspace: Workspace, cli: Any) -> None:
    again = cli("backup", str(archive), env=admin_env())
    assert again.code == 2 and "exists" in again.stderr
    inside = cli("backup", str(workspace.root / "copy.backup"), env=admin_env())
    assert inside.code == 2 and "outside the workspace" in inside.stderr
    nowhere = cli("backup", str(archive.parent / "none" / "x.backup"), env=admin_env())
    assert nowhere.code == 2 and "is not a folder" in nowhere.stderr
    events = cli("audit", "show", "--action", "workspace.backup", "--json", env=admin_env())
    assert events.stdout.count('"workspace.backup"') == 1  # only the backup that was made
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    ws.login("admin", Secret("admin-password-1"))
    ws.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    ws.close()
    denied = cli(
        "backup",
        str(archive.with_name("dana.backup")),
        env=admin_env(SEALML_USER="dana", SEALML_PASSWORD="dana-password"),
    )
    assert denied.code == 2 and "workspace:backup" in denied.stderr
    assert not archive.with_name("dana.backup").exists()


def test_wrong_passphrase_and_existing_target(archive: Path, tmp_path: Path, cli: Any) -> None:
    target = tmp_path / "restored"
    wrong = _restore(cli, archive, target, SEALML_PASSPHRASE="not the passphrase")
    assert wrong.code == 1 and "failed authentication" in wrong.stderr
    _nothing_left(target)
    target.mkdir()
    exists = _restore(cli, archive, target)
    assert exists.code == 2 and "exists" in exists.stderr


@pytest.mark.parametrize("where", ["header", "body", "end", "cut"])
def test_changed_or_cut_archives_are_refused(
    archive: Path, tmp_path: Path, cli: Any, where: str
) -> None:
    data = bytearray(archive.read_bytes())
    if where == "cut":
        del data[-5000:]
    else:
        at = {"header": len(backups.MAGIC) + 20, "body": len(data) // 2, "end": len(data) - 3}
        data[at[where]] ^= 0x01
    archive.write_bytes(bytes(data))
    target = tmp_path / "restored"
    result = _restore(cli, archive, target)
    assert result.code in (1, 2) and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    _nothing_left(target)


def test_not_a_backup(tmp_path: Path, cli: Any) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    result = _restore(cli, other, tmp_path / "restored")
    assert result.code == 2 and "not a sealml backup" in result.stderr
    missing = _restore(cli, tmp_path / "none.backup", tmp_path / "restored")
    assert missing.code == 2 and "does not exist" in missing.stderr


def test_a_restore_that_rolls_the_ledger_back_needs_consent(
    archive: Path, workspace: Workspace, tmp_path: Path, cli: Any
) -> None:
    assert cli("ls", env=admin_env()).code == 0  # a login: the ledger grows past the backup
    target = tmp_path / "restored"
    refused = _restore(cli, archive, target)
    assert refused.code == 2 and "--accept-rollback" in refused.stderr
    _nothing_left(target)
    accepted = _restore(cli, archive, target, "--accept-rollback", "--json")
    assert accepted.code == 0, accepted.stderr
    assert json.loads(accepted.stdout)["rolled_back_events"] >= 1
    witness = Path(os.environ["SEALML_STATE_DIR"]) / "witness"
    assert list(witness.glob("*.note.before-restore-*"))
    env = admin_env(SEALML_WORKSPACE=str(target))
    assert cli("audit", "verify", env=env).code == 0


def test_a_forged_archive_cannot_write_outside_its_folder(
    archive: Path, tmp_path: Path, cli: Any
) -> None:
    """Even with the right passphrase, only the names a backup holds are extracted."""
    header = backups._header("0" * 32, FAST_PARAMS, salt := new_salt())
    key = derive_key(Secret(PASSPHRASE), salt, FAST_PARAMS)
    forged = tmp_path / "forged.backup"
    with forged.open("wb") as sink:
        sink.write(header)
        writer = EncryptingWriter(key, header, sink, StreamingParams())
        with tarfile.open(fileobj=writer, mode="w|") as tar:
            manifest = {"format": backups.FORMAT, "workspace_id": "0" * 32,
                        "ledger_size": 0, "artifacts": 0}  # fmt: skip
            for name, data in [("manifest.json", json.dumps(manifest).encode()),
                               ("../escaped.txt", b"owned")]:  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        writer.close()
    target = tmp_path / "restored"
    result = _restore(cli, forged, target)
    assert result.code == 1 and "unexpected entry" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()
    _nothing_left(target)


def test_files_kept_outside_the_folder_come_back_inside_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    from sealml.config import CONFIG_NAME, load_config

    root = workspace.root
    info = workspace.put(io.BytesIO(b"rows"), "dataset", "rows")
    workspace.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("keystore.json", "sealml.db", "blobs"):
        (root / ".sealml" / name).rename(elsewhere / name)
    config = load_config(root / CONFIG_NAME)
    config.keys.keystore = str(elsewhere / "keystore.json")
    config.database.url = f"sqlite:///{elsewhere / 'sealml.db'}"
    config.blobs.path = str(elsewhere / "blobs")
    (root / CONFIG_NAME).write_bytes(config.dump())
    with reopen(root) as moved:
        backups.create_backup(moved, tmp_path / "ws.backup", Secret(PASSPHRASE))
    restored = backups.restore_backup(tmp_path / "ws.backup", tmp_path / "copy", Secret(PASSPHRASE))
    settled = load_config(restored.root / CONFIG_NAME)
    assert str(elsewhere) not in (restored.root / CONFIG_NAME).read_text()
    assert settled.keys.keystore == ".sealml/keystore.json"
    for name in ("keystore.json", "sealml.db", "blobs"):
        assert (restored.root / ".sealml" / name).exists()
    with reopen(restored.root) as copy:
        assert copy.read_bytes(info.id) == b"rows"
        assert copy.audit_verify().ok


def test_check_verifies_without_restoring(archive: Path, tmp_path: Path, cli: Any) -> None:
    before = sorted(tmp_path.iterdir())
    checked = cli("restore", str(archive), "--check", "--json", env=admin_env())
    assert checked.code == 0, checked.stderr
    assert json.loads(checked.stdout)["artifacts"] == 2
    assert sorted(tmp_path.iterdir()) == before
    usage = cli("restore", str(archive), env=admin_env())
    assert usage.code == 2 and "--check" in usage.stderr
    both = cli("restore", str(archive), str(tmp_path / "x"), "--check", env=admin_env())
    assert both.code == 2
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x80
    archive.write_bytes(bytes(data))
    damaged = cli("restore", str(archive), "--check", env=admin_env())
    assert damaged.code == 1 and "failed authentication" in damaged.stderr


def test_backups_across_a_workspace_key_rotation(
    workspace: Workspace, tmp_path: Path, cli: Any
) -> None:
    """A backup made after a rotation restores and verifies (its ledger carries the
    handover); one made before it is, on this machine, a rollback: the witness holds a note
    signed by a key that backup does not know."""
    workspace.put(io.BytesIO(b"before"), "other", "before")
    workspace.close()
    before = tmp_path / "before.backup"
    assert cli("backup", str(before), env=admin_env()).code == 0
    assert cli("keys", "rotate-workspace-key", env=admin_env()).code == 0
    assert cli("put", str(before), "--kind", "other", "--name", "after", env=admin_env()).code == 0
    after = tmp_path / "after.backup"
    assert cli("backup", str(after), env=admin_env()).code == 0

    restored = _restore(cli, after, tmp_path / "restored")
    assert restored.code == 0, restored.stderr
    env = admin_env(SEALML_WORKSPACE=str(tmp_path / "restored"))
    assert cli("audit", "verify", env=env).code == 0
    assert cli("verify", "--all", env=env).code == 0

    refused = _restore(cli, before, tmp_path / "older")
    assert refused.code == 2 and "rotated after the backup" in refused.stderr
    _nothing_left(tmp_path / "older")
    accepted = _restore(cli, before, tmp_path / "older", "--accept-rollback")
    assert accepted.code == 0, accepted.stderr
    witness = list((Path(os.environ["SEALML_STATE_DIR"]) / "witness").glob("*.before-restore-*"))
    assert witness  # the newer note is kept beside, not lost
