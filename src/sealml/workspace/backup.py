"""Encrypted backups of a whole workspace, and restoring one into a new folder.

Archive format ``sealml-backup/1``::

    archive = MAGIC || uint32_be(len(header)) || header || body
    header  = JSON: format, workspace id, creation time, Argon2id parameters and salt,
              segment size
    body    = the streaming AEAD (sealml.crypto.streaming) of a tar stream, keyed by
              Argon2id(passphrase, salt), with MAGIC || length || header as associated data

The tar stream holds ``manifest.json`` first (what the backup holds and the ledger's
latest signed checkpoint), then ``sealml.toml``, a consistent copy of the database as a
SQLite file (SQLite's online backup, or one snapshot of every table of a server
database), the keystore (copied while its writers are held off, so it holds every key the
database copy refers to) and every live artifact's blob, wherever each is kept. A restore
is a self-contained folder: all of them in their default places in it. Everything is
authenticated: a changed, cut or extended archive, or a wrong passphrase, is refused
before the restored workspace is put in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from .._version import __version__
from ..clock import utc_now
from ..config import (
    CONFIG_NAME,
    STATE_DIR,
    BlobsSection,
    Config,
    DatabaseSection,
    KeysSection,
    load_config,
    resolve,
)
from ..crypto.kdf import Argon2idParams, derive_key, new_salt
from ..crypto.secret import Secret
from ..crypto.streaming import DecryptingReader, EncryptingWriter, StreamingParams
from ..db.engine import Database
from ..db.models import ArtifactRow, Base
from ..errors import ConfigError, IntegrityError, UsageError
from ..fsutil import FILE_MODE, make_private_dir
from ..keys.local import keystore_held
from ..ledger import EventDraft, Ledger, NoteVerifier
from ..ledger.keyhistory import KeyHistory
from ..store.artifacts import live_artifacts, sealed_size
from ..store.blobs import LocalBlobStore
from ..witness import Witness
from .core import WorkspaceCore

FORMAT = "sealml-backup/1"
MAGIC = b"sealml-backup/1\n"
MAX_HEADER = 64 * 1024
DATABASE = f"{STATE_DIR}/sealml.db"
KEYSTORE = f"{STATE_DIR}/keystore.json"
BLOBS = f"{STATE_DIR}/blobs"
_ROWS_PER_BATCH = 1000
_MEMBER = re.compile(
    rf"manifest\.json|{re.escape(CONFIG_NAME)}|{re.escape(DATABASE)}|{re.escape(KEYSTORE)}"
    rf"|{re.escape(BLOBS)}/[0-9a-f]{{2}}/[0-9a-f]{{32}}"
)


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds."""

    path: Path
    workspace_id: str
    created_at: str
    artifacts: int
    ledger_size: int
    bytes: int


@dataclass(frozen=True)
class RestoreInfo:
    """What a restore put in place."""

    root: Path
    workspace_id: str
    created_at: str
    artifacts: int
    ledger_size: int
    rolled_back_events: int  # events this machine's witness saw after the backup


def create_backup(workspace: WorkspaceCore, output: Path, passphrase: Secret) -> BackupInfo:
    """Write an encrypted backup of *workspace* to *output* (a new file, 0600)."""
    workspace.authorize("workspace:backup", "workspace", action="workspace.backup")
    output = output.expanduser().resolve()
    if output.is_relative_to(workspace.root):
        raise UsageError("write the backup outside the workspace folder")
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        raise UsageError(f"{output} exists; refusing to overwrite it") from None
    except FileNotFoundError:
        raise UsageError(f"{output.parent} is not a folder") from None
    # Recorded first, so that the backup holds its own event and a restore on this
    # machine rolls nothing back; a failure is recorded after it.
    try:
        workspace.record([workspace.event("workspace.backup", "workspace", file=output.name)])
        params, salt = workspace.kdf_params, new_salt()
        header = _header(workspace.config.workspace.id, params, salt)
        key = derive_key(passphrase, salt, params)
    except BaseException:
        os.close(descriptor)
        output.unlink(missing_ok=True)
        raise
    try:
        with os.fdopen(descriptor, "wb") as sink:
            sink.write(header)
            writer = EncryptingWriter(key, header, sink, StreamingParams())
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                manifest = _write_members(workspace, tar)
            writer.close()
            sink.flush()
            os.fsync(sink.fileno())
    except BaseException as error:
        output.unlink(missing_ok=True)
        failed = workspace.event(
            "workspace.backup", "workspace", "failed", file=output.name, error=type(error).__name__
        )
        with contextlib.suppress(Exception):  # best effort: the original error matters
            workspace.record([failed])
        raise
    return BackupInfo(
        output,
        workspace.config.workspace.id,
        manifest["created_at"],
        manifest["artifacts"],
        manifest["ledger_size"],
        output.stat().st_size,
    )


def _header(workspace_id: str, params: Argon2idParams, salt: bytes) -> bytes:
    meta = {
        "format": FORMAT,
        "workspace_id": workspace_id,
        "created_at": utc_now(),
        "kdf": params.to_dict(),
        "salt": salt.hex(),
        "segment_size": StreamingParams().segment_size,
    }
    body = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(body)) + body


def _write_members(workspace: WorkspaceCore, tar: tarfile.TarFile) -> dict[str, Any]:
    root = workspace.root
    with tempfile.TemporaryDirectory(dir=root / STATE_DIR, prefix="backup-") as scratch:
        copy = Path(scratch) / "sealml.db"
        with keystore_held(resolve(root, workspace.config.keys.keystore)) as keystore:
            _copy_database(workspace.db, copy)
        rows, ledger_size, note = _contents(copy)
        manifest = {
            "format": FORMAT,
            "workspace_id": workspace.config.workspace.id,
            "created_at": utc_now(),
            "sealml_version": __version__,
            "artifacts": len(rows),
            "blobs_from": str(workspace.blobs),
            "ledger_size": ledger_size,
            "checkpoint": note,
        }
        _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        _add_bytes(tar, CONFIG_NAME, (root / CONFIG_NAME).read_bytes())
        tar.add(copy, arcname=DATABASE, recursive=False)
        _add_bytes(tar, KEYSTORE, keystore)
        for row in sorted(rows, key=lambda r: r.blob_name):
            _add_blob(workspace, tar, row)
    return manifest


def _add_blob(workspace: WorkspaceCore, tar: tarfile.TarFile, row: ArtifactRow) -> None:
    """One sealed blob, as stored (it stays encrypted under its data key), from the local
    folder or the bucket; it must have exactly its sealed size."""
    name = row.blob_name
    info = tarfile.TarInfo(f"{BLOBS}/{name[:2]}/{name}")
    info.size, info.mode, info.mtime = sealed_size(row), FILE_MODE, int(time.time())
    if workspace.blobs.size(name) != info.size:
        raise IntegrityError(
            f"the blob of artifact {row.id} has the wrong size (see `sealml doctor`)"
        )
    try:
        with workspace.blobs.open(name) as source:
            tar.addfile(info, source)
    except OSError:  # cut short while it was read
        raise UsageError(f"blob {name} changed during the backup; run it again") from None


def _copy_database(source: Database, target: Path) -> None:
    """A consistent copy of the live database as a SQLite file: SQLite's online backup,
    or every table of a server database read in one snapshot."""
    if source.file is not None:
        with (
            contextlib.closing(sqlite3.connect(source.file)) as live,
            contextlib.closing(sqlite3.connect(target)) as copy,
        ):
            live.backup(copy)
        target.chmod(FILE_MODE)
        return
    replica = Database(f"sqlite:///{target}", create=True)
    try:
        replica.upgrade()  # the newest schema, which the open workspace's database is at too
        snapshot = source.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        with snapshot as live, replica.engine.begin() as out:
            for table in Base.metadata.sorted_tables:  # parents before the rows naming them
                rows = live.execute(select(table).execution_options(yield_per=_ROWS_PER_BATCH))
                for batch in rows.mappings().partitions():
                    out.execute(insert(table), [dict(row) for row in batch])
    finally:
        replica.dispose()


def _contents(database_file: Path) -> tuple[list[ArtifactRow], int, str | None]:
    """The live (not shredded) artifacts in a copied database, and the size and note of
    its ledger's latest signed checkpoint."""
    database = Database(f"sqlite:///{database_file}")
    try:
        with database.read() as session:
            rows = live_artifacts(session)
            latest = Ledger.latest_checkpoint(session)
            return rows, (latest.size if latest else 0), (latest.note if latest else None)
    finally:
        database.dispose()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), FILE_MODE, int(time.time())
    tar.addfile(info, io.BytesIO(data))


# -- restore --------------------------------------------------------------------------------


def restore_backup(
    archive: Path, target: Path, passphrase: Secret, *, accept_rollback: bool = False
) -> RestoreInfo:
    """Restore *archive* into *target*, a folder that must not exist yet.

    Everything is decrypted, authenticated and checked in a private folder beside
    *target*, which becomes *target* only when all of it verified; on any failure it is
    removed and nothing else is touched. If this machine's witness saw the workspace's
    ledger grow past the backup, restoring rolls those events back: refused unless
    *accept_rollback*, and then the old witness note is kept beside the new one.
    """
    target = target.expanduser().resolve()
    if target.exists():
        raise UsageError(f"{target} exists; restore into a new folder")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=target.parent))
    try:
        manifest = _unpack(archive, staging, passphrase)
        restored = _check_restored(staging, manifest, accept_rollback)
        _check_token(staging, passphrase)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _witness_restored(target, manifest, restored.rolled_back_events)
    _record_restore(target, passphrase, archive, manifest, restored.rolled_back_events)
    return dataclasses.replace(restored, root=target)


def check_backup(archive: Path, passphrase: Secret) -> RestoreInfo:
    """Everything :func:`restore_backup` checks, in a private temporary folder removed
    afterwards: a backup that passes can be restored. Its ``root`` no longer exists;
    ``rolled_back_events`` says what restoring it on this machine would roll back."""
    staging = Path(tempfile.mkdtemp(prefix="sealml-backup-check-"))
    try:
        manifest = _unpack(archive, staging, passphrase)
        return _check_restored(staging, manifest, accept_rollback=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive: Path, staging: Path, passphrase: Secret) -> dict[str, Any]:
    """Authenticate *archive* and extract it into *staging*; returns its manifest."""
    with _open_archive(archive) as source:
        header = _read_header(source)
        meta = _parse_header(header)
        key = derive_key(passphrase, bytes.fromhex(meta["salt"]), meta["kdf"])
        reader = _ArchiveReader(key, header, source, meta["params"])
        return _extract(reader, staging, meta["workspace_id"])


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[io.BufferedReader]:
    try:
        with archive.expanduser().open("rb") as source:
            yield source
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"backup {archive} does not exist") from None


def _read_header(source: io.BufferedReader) -> bytes:
    magic = source.read(len(MAGIC))
    if magic != MAGIC:
        raise UsageError("not a sealml backup (or a newer format than this sealml reads)")
    length_bytes = source.read(4)
    length = struct.unpack(">I", length_bytes)[0] if len(length_bytes) == 4 else 0
    if not 0 < length <= MAX_HEADER:
        raise IntegrityError("the backup's header is damaged")
    body = source.read(length)
    if len(body) != length:
        raise IntegrityError("the backup is cut short in its header")
    return magic + length_bytes + body


def _parse_header(header: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(header[len(MAGIC) + 4 :])
        if meta["format"] != FORMAT:
            raise UsageError(f"backup format {meta['format']!r} is not {FORMAT}")
        return {
            "workspace_id": str(meta["workspace_id"]),
            "salt": str(meta["salt"]),
            "kdf": Argon2idParams.from_dict(meta["kdf"]),
            "params": StreamingParams(segment_size=int(meta["segment_size"])),
        }
    except (ValueError, KeyError, TypeError, ConfigError):
        raise IntegrityError("the backup's header is damaged") from None


class _ArchiveReader(DecryptingReader):
    """The archive's plaintext; a failed segment says what it means for a backup."""

    def readinto(self, buffer: Any, /) -> int:
        try:
            return super().readinto(buffer)
        except IntegrityError:
            raise IntegrityError(
                "the backup failed authentication: a wrong passphrase, or the file was "
                "changed or cut short"
            ) from None


def _extract(reader: DecryptingReader, staging: Path, workspace_id: str) -> dict[str, Any]:
    """Write the archive's members under *staging*: only the names a backup holds, only
    regular files, each created 0600 in 0700 folders; the manifest comes first."""
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or not _MEMBER.fullmatch(member.name):
                    raise IntegrityError(f"the backup holds an unexpected entry {member.name!r}")
                content = tar.extractfile(member)
                assert content is not None  # a regular file
                if manifest is None:
                    if member.name != "manifest.json":
                        raise IntegrityError("the backup does not start with its manifest")
                    manifest = _manifest(content.read(MAX_HEADER + 1), workspace_id)
                    continue
                path = staging / member.name
                make_private_dir(path.parent)
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                with os.fdopen(descriptor, "wb") as out:
                    shutil.copyfileobj(content, out, 1 << 20)
    except tarfile.TarError:
        raise IntegrityError("the backup's content is damaged") from None
    except FileExistsError:
        raise IntegrityError("the backup holds an entry twice") from None
    if manifest is None:
        raise IntegrityError("the backup is empty")
    return manifest


def _manifest(data: bytes, workspace_id: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        if manifest["format"] != FORMAT or manifest["workspace_id"] != workspace_id:
            raise ValueError
        int(manifest["ledger_size"]), int(manifest["artifacts"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the backup's manifest is damaged") from None
    return dict(manifest)


def _check_restored(staging: Path, manifest: dict[str, Any], accept_rollback: bool) -> RestoreInfo:
    """What the restored files hold agrees with the manifest: config, every live blob at
    its sealed size, the ledger's latest checkpoint; and the rollback the restore is."""
    for needed in (CONFIG_NAME, DATABASE, KEYSTORE):
        if not (staging / needed).is_file():
            raise IntegrityError(f"the backup lacks {needed}")
    config = load_config(staging / CONFIG_NAME)
    if config.workspace.id != manifest["workspace_id"]:
        raise IntegrityError("the backup's configuration belongs to another workspace")
    default_keystore = KeysSection().keystore
    if (config.blobs, config.database.url, config.keys.keystore) != (
        BlobsSection(),
        DatabaseSection().url,
        default_keystore,
    ):
        # Blobs, rows and keys kept elsewhere (a bucket, a server, another folder) came
        # into the archive: the copy keeps them in its own folder, and never writes to
        # the original's.
        config.blobs, config.database = BlobsSection(), DatabaseSection()
        config.keys.keystore = default_keystore
        (staging / CONFIG_NAME).write_bytes(config.dump())
    LocalBlobStore.initialise(staging / BLOBS)  # the tar stream holds no empty folders
    rows, size, note = _contents(staging / DATABASE)
    for row in rows:
        blob = staging / BLOBS / row.blob_name[:2] / row.blob_name
        if not blob.is_file() or blob.stat().st_size != sealed_size(row):
            raise IntegrityError(f"the backup lacks the blob of artifact {row.id}")
    if size != manifest["ledger_size"] or note != manifest["checkpoint"]:
        raise IntegrityError("the backup's ledger does not match its manifest")
    try:
        seen = _witness(config, staging / DATABASE).load_checked()
    except IntegrityError:
        if not accept_rollback:
            raise UsageError(
                "this machine saw the workspace's ledger signed by a key the backup does not "
                "know (the workspace key was rotated after the backup was made): restoring "
                "rolls back. Re-run with --accept-rollback to restore it anyway"
            ) from None
        seen = None
    rolled_back = max(0, seen.size - size) if seen is not None else 0
    if rolled_back and not accept_rollback:
        raise UsageError(
            f"this machine saw the workspace's ledger reach {size + rolled_back} events and "
            f"the backup holds {size}: restoring rolls {rolled_back} back. Re-run with "
            "--accept-rollback to restore it anyway"
        )
    return RestoreInfo(
        staging,
        manifest["workspace_id"],
        manifest["created_at"],
        int(manifest["artifacts"]),
        size,
        rolled_back,
    )


def _check_token(staging: Path, passphrase: Secret) -> None:
    """A workspace whose keys live in a PKCS#11 token signs the restore's ledger event
    there: the token and its PIN must answer before anything is put in place."""
    from . import Workspace

    if load_config(staging / CONFIG_NAME).keys.provider != "pkcs11":
        return
    with Workspace.open(staging, passphrase=passphrase) as restored:
        _ = restored.keys


def _witness(config: Config, database_file: Path) -> Witness:
    """This machine's witness of the workspace, its notes checked against the keys the
    backup's ledger records (a backup from before a workspace key rotation knows only the
    keys up to then)."""
    try:
        verifier = NoteVerifier.decode(config.ledger.verifier_key)
    except UsageError:
        raise IntegrityError("the backup's configuration holds a malformed verifier key") from None
    database = Database(f"sqlite:///{database_file}")
    try:
        with database.read() as session:
            history = KeyHistory.read(session, verifier)
    finally:
        database.dispose()
    return Witness(config.workspace.id, history.open)


def _witness_restored(target: Path, manifest: dict[str, Any], rolled_back: int) -> None:
    """Point this machine's witness at the restored ledger; after an accepted rollback (or
    a witnessed note the backup's keys cannot check), the note it held is kept beside it."""
    witness = _witness(load_config(target / CONFIG_NAME), target / DATABASE)
    try:
        witness.load_checked()
    except IntegrityError:
        rolled_back = max(rolled_back, 1)
    if rolled_back and witness.path.exists():
        kept = f"{witness.path.name}.before-restore-{int(time.time())}"
        witness.path.rename(witness.path.with_name(kept))
    if manifest["checkpoint"]:
        witness.advance(manifest["checkpoint"])


def _record_restore(
    root: Path, passphrase: Secret, archive: Path, manifest: dict[str, Any], rolled_back: int
) -> None:
    from . import Workspace

    with Workspace.open(root, passphrase=passphrase) as restored:
        _ = restored.keystore  # unlocked, so the event is anchored by a signed checkpoint
        restored.record(
            [
                EventDraft(
                    principal="-",
                    action="workspace.restore",
                    resource="workspace",
                    details={
                        "file": archive.name,
                        "backup_created_at": manifest["created_at"],
                        "rolled_back_events": rolled_back,
                    },
                )
            ]
        )
