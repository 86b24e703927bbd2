"""Artifact operations: put, get, open_reader, verify, ls, shred, key rotation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..access.policy import ARTIFACT_KINDS
from ..access.principals import Principal
from ..clock import utc_now
from ..crypto.streaming import Readable, StreamingParams, Writable
from ..data.tables import media_type_of
from ..db.models import ArtifactParentRow, ArtifactRow, DataKeyRow
from ..db.raw import insert_rows
from ..errors import IntegrityError, NotFoundError, SealmlError, ShreddedError, UsageError
from ..fsutil import atomic_writer
from ..ledger import EventDraft, EventFilter, Ledger
from ..store.artifacts import (
    ArtifactDraft,
    ArtifactInfo,
    SealedArtifact,
    VerifyingReader,
    check_row,
    info_of,
    seal,
    unseal,
    unwrap_key,
)
from .core import WorkspaceCore
from .once import once

_ID_LENGTH = 32
_MIN_PREFIX = 6


def statement_hash(row: ArtifactRow) -> str:
    """What the ledger's put event records about an artifact: the hash of its signed
    statement (not the plaintext digest, which the ledger export must not reveal)."""
    return hashlib.sha256(row.statement).hexdigest()


def resource_of(row: ArtifactRow) -> str:
    """The ledger resource name of an artifact."""
    return f"artifact:{row.id}"


@dataclass
class ArtifactCheck:
    """The verification result of one artifact."""

    info: ArtifactInfo
    status: str  # "ok", "shredded" or "failed"
    problem: str | None = None


@dataclass
class StoreReport:
    """Verification of every artifact in the workspace."""

    checks: list[ArtifactCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    orphan_blobs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.status != "failed" for c in self.checks)


class ArtifactOperations(WorkspaceCore):
    """Seal, unseal, verify, list and shred artifacts."""

    # -- lookup ---------------------------------------------------------------------------

    def _children(self, session: Session, parent: str, kind: str) -> list[ArtifactRow]:
        """The live artifacts of *kind* made from *parent*, newest first."""
        return list(
            session.execute(
                select(ArtifactRow)
                .join(ArtifactParentRow, ArtifactParentRow.child_id == ArtifactRow.id)
                .where(
                    ArtifactParentRow.parent_id == parent,
                    ArtifactRow.kind == kind,
                    ArtifactRow.shredded_at.is_(None),
                )
                .order_by(ArtifactRow.created_at.desc())
            ).scalars()
        )

    def _annotated_child(
        self, session: Session, parent: str, kind: str, **annotations: str
    ) -> ArtifactRow | None:
        """The newest child of *parent* whose annotations include all of *annotations*."""
        for row in self._children(session, parent, kind):
            found = info_of(row).annotations
            if all(found.get(key) == value for key, value in annotations.items()):
                return row
        return None

    def _find(self, session: Session, ref: str) -> ArtifactRow:
        ref = ref.strip()
        if not ref:
            raise UsageError("an artifact id or name is required")
        lowered = ref.lower()
        if len(lowered) >= _MIN_PREFIX and all(c in "0123456789abcdef" for c in lowered):
            if len(lowered) == _ID_LENGTH:
                row = session.get(ArtifactRow, lowered)
                if row is not None:
                    return row
            else:
                found = list(
                    session.execute(
                        select(ArtifactRow).where(ArtifactRow.id.startswith(lowered)).limit(2)
                    ).scalars()
                )
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise UsageError(f"artifact id prefix {ref!r} is ambiguous; give more digits")
        row = session.execute(
            select(ArtifactRow)
            .where(ArtifactRow.name == ref)
            .order_by(ArtifactRow.created_at.desc(), ArtifactRow.id)
            .limit(1)
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"no artifact with id or name {ref!r}")
        return row

    def _check_signed(self, session: Session, row: ArtifactRow) -> Principal:
        """Check *row*'s signature by its creator and its columns; returns the creator."""
        try:
            principal = once(
                self, "principal", row.creator, lambda: self.principals.get(session, row.creator)
            )
        except NotFoundError:
            raise IntegrityError(
                f"artifact {row.id}: its creator {row.creator!r} is not a known principal"
            ) from None
        check_row(row, principal.keys)
        since = principal.compromised_signer(row.signature, row.statement)
        if since is not None and self._put_at(session, row) >= since:
            raise IntegrityError(
                f"artifact {row.id}: signed with a key of {row.creator} reported "
                f"compromised since {since}"
            )
        return principal

    @staticmethod
    def _put_at(session: Session, row: ArtifactRow) -> str:
        """When the ledger recorded *row*'s put (its creator's claimed time is not used)."""
        try:
            return str(Ledger.event(session, row.ledger_seq).fields()["ts"])
        except (NotFoundError, ValueError, KeyError):
            raise IntegrityError(f"artifact {row.id}: no put event in the ledger") from None

    def _load_checked(self, session: Session, ref: str) -> tuple[ArtifactRow, DataKeyRow | None]:
        row = self._find(session, ref)
        self._check_signed(session, row)
        return row, session.get(DataKeyRow, row.id)

    def _check_ledger_put(self, session: Session, row: ArtifactRow) -> None:
        try:
            fields = Ledger.event(session, row.ledger_seq).fields()
        except (NotFoundError, ValueError):
            fields = {}
        if (
            fields.get("action") != "artifact.put"
            or fields.get("resource") != resource_of(row)
            or fields.get("outcome") != "ok"
            or fields.get("details", {}).get("statement_sha256") != statement_hash(row)
        ):
            raise IntegrityError(f"artifact {row.id}: no matching put event in the ledger")

    def info(self, ref: str) -> ArtifactInfo:
        """Metadata of an artifact, signature checked (needs read or verify permission)."""
        actor = self.require_actor()
        with self.db.read() as session:
            row, _ = self._load_checked(session, ref)
        if not self.policy.allows(actor.principal.roles, "artifact:verify"):
            self.authorize(f"{row.kind}:read", resource_of(row), action="artifact.info")
        return info_of(row)

    # -- put ------------------------------------------------------------------------------

    def put(
        self,
        source: Path | str | Readable,
        kind: str,
        name: str | None = None,
        *,
        media_type: str | None = None,
        parents: Sequence[str] = (),
        annotations: dict[str, str] | None = None,
    ) -> ArtifactInfo:
        """Seal *source* (a path or a binary stream) as a new artifact.

        One streaming pass hashes (BLAKE3) and encrypts it; the statement is signed by the
        acting principal; the metadata row, wrapped data key and ledger event commit in one
        transaction. Memory use is bounded whatever the size.
        """
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise UsageError(f"{path} is not a readable file")
            name = name or path.name
            with path.open("rb", buffering=0) as handle:
                return self.put(
                    handle,
                    kind,
                    name,
                    media_type=media_type or media_type_of(path.name),
                    parents=parents,
                    annotations=annotations,
                )
        if kind not in ARTIFACT_KINDS:
            raise UsageError(f"kind must be one of {', '.join(ARTIFACT_KINDS)}")
        if not name:
            raise UsageError("a name is required when sealing a stream")
        self.authorize(f"{kind}:write", f"{kind}:{name}", action="artifact.put")
        with self.db.read() as session:
            parent_ids = tuple(self._find(session, p).id for p in parents)
        draft = ArtifactDraft(kind, name, media_type, parent_ids, dict(annotations or {}))
        sealed = self.seal_draft(source, draft)
        try:
            with self.transaction() as session:
                self.commit_sealed(session, sealed)
        except BaseException:
            self.blobs.delete(sealed.artifact.blob_name)
            raise
        return info_of(sealed.artifact)

    def seal_draft(self, source: Readable, draft: ArtifactDraft) -> SealedArtifact:
        """Encrypt and sign one artifact as the acting principal; nothing is recorded until
        :meth:`commit_sealed` (so several can commit in one transaction)."""
        actor = self.require_actor()
        return seal(
            source,
            draft,
            blobs=self.blobs,
            keys=self.keys,
            signer=actor.signing_key,
            creator=actor.name,
            created_at=utc_now(),
            params=StreamingParams(segment_size=self.config.seal.segment_size),
        )

    def commit_sealed(
        self,
        session: Session,
        *sealed: SealedArtifact,
        then: Sequence[EventDraft] = (),
    ) -> None:
        """Record sealed artifacts: their put events (then the events in *then*, in one
        ledger append and one checkpoint), metadata rows, data keys and lineage."""
        infos = [info_of(item.artifact) for item in sealed]
        drafts = [
            self.event(
                "artifact.put",
                resource_of(item.artifact),
                kind=info.kind,
                name=info.name,
                size=item.artifact.size,
                statement_sha256=statement_hash(item.artifact),
            )
            for item, info in zip(sealed, infos, strict=True)
        ]
        seqs = self.append(session, [*drafts, *then])
        if sealed:
            # The append holds the ledger until commit, and a rotation re-wraps with it held.
            keys = self.keys
            keys.refresh()
            for item in sealed:
                item.wrap_under_current(keys)
        for item, seq in zip(sealed, seqs, strict=False):
            item.artifact.ledger_seq = seq
        # In dependency order, through the driver (see sealml.db.raw): the rows are new
        # and nothing else in the session refers to them.
        insert_rows(session, [item.artifact for item in sealed])
        insert_rows(session, [item.data_key for item in sealed])
        insert_rows(
            session,
            [
                ArtifactParentRow(child_id=item.artifact.id, parent_id=parent)
                for item, info in zip(sealed, infos, strict=True)
                for parent in info.parents
            ],
        )

    # -- get ------------------------------------------------------------------------------

    def _open_for_read(
        self, ref: str, action: str, permission: str | None = None
    ) -> tuple[ArtifactRow, bytes]:
        """Check an artifact and unwrap its key; *permission* replaces ``<kind>:read`` for
        reads that another permission governs (revealing tokens from a vault)."""
        with self.db.read() as session:
            row, key_row = self._load_checked(session, ref)
        self.authorize(permission or f"{row.kind}:read", resource_of(row), action=action)
        if row.shredded_at is not None:
            raise ShreddedError(
                f"artifact {row.id} was crypto-shredded at {row.shredded_at}; "
                "its content can never be recovered"
            )
        try:
            return row, unwrap_key(row, key_row, self.keys)
        except IntegrityError as error:
            self._record_failure(action, row, error)
            raise

    def _record_failure(self, action: str, row: ArtifactRow, error: SealmlError) -> None:
        self.record([self.event(action, resource_of(row), "failed", error=str(error))])

    def get(
        self,
        ref: str,
        out: Path | str,
        *,
        overwrite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ArtifactInfo:
        """Decrypt an artifact to *out*, verifying digest and signature before it appears.

        The content is written to a temporary file beside *out* and renamed only after the
        last segment authenticated and the digest matched; on failure nothing is left.
        *progress*, if given, is called with the size of every block written.
        """
        target = Path(out)
        if target.is_dir():
            raise UsageError(f"{target} is a folder; give a file path")
        if target.exists() and not overwrite:
            raise UsageError(f"{target} exists; choose another path, or overwrite it (get --force)")
        if not target.parent.is_dir():
            raise UsageError(f"folder {target.parent} does not exist")
        row, dek = self._open_for_read(ref, "artifact.get")
        try:
            with atomic_writer(target, durable=False) as handle:
                sink = handle if progress is None else _ProgressSink(handle, progress)
                unseal(row, dek, self.blobs, sink)
        except IntegrityError as error:
            self._record_failure("artifact.get", row, error)
            raise
        self.record([self.event("artifact.get", resource_of(row))])
        return info_of(row)

    def open_reader(
        self, ref: str, *, permission: str | None = None, action: str = "artifact.get"
    ) -> VerifyingReader:
        """A file-like reader of an artifact's plaintext (see VerifyingReader for the checks)."""
        row, dek = self._open_for_read(ref, action, permission)
        self.record([self.event(action, resource_of(row), mode="stream")])
        return VerifyingReader(row, dek, self.blobs)

    def read_bytes(
        self, ref: str, *, permission: str | None = None, action: str = "artifact.get"
    ) -> bytes:
        """The whole plaintext of a (small) artifact, fully verified."""
        with self.open_reader(ref, permission=permission, action=action) as reader:
            return reader.read()

    # -- verify ---------------------------------------------------------------------------

    def _verify_row(self, session: Session, row: ArtifactRow) -> ArtifactCheck:
        try:
            self._check_signed(session, row)
            info = info_of(row)
            self._check_ledger_put(session, row)
            if row.shredded_at is not None:
                return ArtifactCheck(info, "shredded")
            dek = unwrap_key(row, session.get(DataKeyRow, row.id), self.keys)
            unseal(row, dek, self.blobs, None)
        except IntegrityError as error:
            return ArtifactCheck(_fallback_info(row), "failed", str(error))
        return ArtifactCheck(info, "ok")

    def verify(self, ref: str) -> ArtifactInfo:
        """Check one artifact end to end; raises IntegrityError on any discrepancy."""
        with self.db.read() as session:
            row = self._find(session, ref)
        self.authorize("artifact:verify", resource_of(row), action="artifact.verify")
        with self.db.read() as session:
            check = self._verify_row(session, row)
        if check.status == "failed":
            assert check.problem is not None
            self._record_failure("artifact.verify", row, IntegrityError(check.problem))
            raise IntegrityError(check.problem)
        self.record([self.event("artifact.verify", resource_of(row), status=check.status)])
        return check.info

    def verify_store(self) -> StoreReport:
        """Check every artifact, and that metadata and ledger agree on which exist."""
        self.authorize("artifact:verify", "artifact:*", action="artifact.verify")
        report = StoreReport()
        referenced: set[str] = set()
        with self.db.read() as session:
            rows = list(
                session.execute(select(ArtifactRow).order_by(ArtifactRow.created_at)).scalars()
            )
            for row in rows:
                referenced.add(row.blob_name)
                report.checks.append(self._verify_row(session, row))
            report.problems.extend(_ledger_only(session, {row.id for row in rows}))
        stored = {name for name, _ in self.blobs.listing()}
        report.orphan_blobs = len(stored - referenced)
        self.record(
            [
                self.event(
                    "artifact.verify",
                    "artifact:*",
                    "ok" if report.ok else "failed",
                    checked=len(report.checks),
                    failed=sum(c.status == "failed" for c in report.checks),
                )
            ]
        )
        return report

    # -- listing --------------------------------------------------------------------------

    def ls(self, kind: str | None = None, name: str | None = None) -> list[ArtifactInfo]:
        """Artifacts the acting principal may read or verify, newest first."""
        actor = self.require_actor()
        visible = [
            k
            for k in ARTIFACT_KINDS
            if self.policy.allows(actor.principal.roles, f"{k}:read")
            or self.policy.allows(actor.principal.roles, "artifact:verify")
        ]
        if kind is not None:
            if kind not in ARTIFACT_KINDS:
                raise UsageError(f"kind must be one of {', '.join(ARTIFACT_KINDS)}")
            visible = [k for k in visible if k == kind]
        query = select(ArtifactRow).where(ArtifactRow.kind.in_(visible))
        if name is not None:
            query = query.where(ArtifactRow.name == name)
        with self.db.read() as session:
            rows = session.execute(query.order_by(ArtifactRow.created_at.desc())).scalars()
            return [_fallback_info(row) for row in rows]

    # -- keys -----------------------------------------------------------------------------

    def shred(self, ref: str, reason: str = "") -> ArtifactInfo:
        """Destroy an artifact's data key so its content can never be recovered.

        The metadata row and the ledger history stay: the record that the artifact existed
        and was shredded is kept, the content is gone.
        """
        with self.db.read() as session:
            row = self._find(session, ref)
        self.authorize("keys:shred", resource_of(row), action="artifact.shred")
        with self.transaction() as session:
            row = self._find(session, row.id)
            if row.shredded_at is not None:
                raise UsageError(f"artifact {row.id} was already shredded at {row.shredded_at}")
            key_row = session.get(DataKeyRow, row.id)
            if key_row is not None:
                session.delete(key_row)
            row.shredded_at = utc_now()
            self.append(session, [self.event("artifact.shred", resource_of(row), reason=reason)])
        self.blobs.purge(row.blob_name)
        self.db.truncate_journal()
        return _fallback_info(row)


class _ProgressSink:
    """Forwards writes and reports their sizes."""

    def __init__(self, inner: Writable, advance: Callable[[int], None]) -> None:
        self._inner = inner
        self._advance = advance

    def write(self, data: memoryview, /) -> object:
        written = self._inner.write(data)
        self._advance(len(data))
        return written


def _fallback_info(row: ArtifactRow) -> ArtifactInfo:
    """Metadata for display even when the statement is damaged (verification reports it)."""
    try:
        return info_of(row)
    except (IntegrityError, KeyError, TypeError, ValueError):
        return ArtifactInfo(
            id=row.id,
            name=row.name,
            kind=row.kind,
            media_type=row.media_type,
            size=row.size,
            digest=row.digest,
            creator=row.creator,
            created_at=row.created_at,
            parents=(),
            shredded_at=row.shredded_at,
        )


def _ledger_only(session: Session, existing: Iterable[str]) -> list[str]:
    """Artifacts the ledger says were put but whose metadata row is gone."""
    present = set(existing)
    problems = []
    for event in Ledger.events(session, EventFilter(action="artifact.put", outcome="ok")):
        try:
            resource = str(json.loads(event.body)["resource"])
        except (ValueError, KeyError):
            continue
        artifact_id = resource.removeprefix("artifact:")
        if artifact_id not in present:
            problems.append(
                f"artifact {artifact_id} is in the ledger (event {event.seq}) "
                "but its metadata row is missing"
            )
    return problems
