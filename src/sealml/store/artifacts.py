"""Seal and unseal artifacts: hash + encrypt + sign in one streaming pass, and the reverse.

An artifact is stored as three things:

* a blob: the plaintext encrypted with a fresh data key (DEK) in Tink's AES-GCM-HKDF
  streaming format, with the artifact id as associated data;
* a data-key row: the DEK wrapped by the key provider's current KEK;
* a metadata row whose ``statement`` (canonical JSON naming the id, kind, size and BLAKE3
  digest of the plaintext) is signed by the principal who sealed it.

Unsealing checks the signature before the first byte is decrypted, authenticates every
segment while decrypting and compares the digest at the end.
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..access.policy import ARTIFACT_KINDS
from ..crypto.canonical import canonical_json
from ..crypto.digest import ARTIFACT_DIGEST, new_hasher
from ..crypto.signing import Signer, VerifyingKey
from ..crypto.streaming import (
    DecryptingReader,
    Readable,
    StreamingParams,
    Writable,
    decrypt_stream,
    encrypt_stream,
)
from ..db.models import ArtifactRow, DataKeyRow
from ..errors import IntegrityError, UsageError
from ..keys.provider import DEK_SIZE, KeyProvider, WrappedKey, dek_context
from .blobs import BlobStore

STATEMENT_TYPE = "https://sealml.dev/artifact/v1"
BLOB_FORMAT = "tink-aes-gcm-hkdf-sha256-streaming"
MAX_NAME = 255
_KIND_MEDIA = {
    "dataset": "application/octet-stream",
    "model": "application/octet-stream",
    "report": "application/json",
    "other": "application/octet-stream",
    "attestation": "application/vnd.dsse.envelope.v1+json",
    "vault": "application/json",
}


def associated_data(artifact_id: str) -> bytes:
    """The streaming AEAD's associated data: binds a blob to its artifact."""
    return b"sealml/artifact/v1:" + artifact_id.encode("ascii")


@dataclass(frozen=True)
class ArtifactDraft:
    """What the caller says about a new artifact."""

    kind: str
    name: str
    media_type: str | None = None
    parents: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_KINDS:
            raise UsageError(f"kind must be one of {', '.join(ARTIFACT_KINDS)}")
        if not self.name or len(self.name) > MAX_NAME or any(ord(c) < 32 for c in self.name):
            raise UsageError(f"an artifact name is 1-{MAX_NAME} printable characters")


@dataclass(frozen=True)
class ArtifactInfo:
    """Verified-at-load metadata of an artifact, as shown to users."""

    id: str
    name: str
    kind: str
    media_type: str
    size: int
    digest: str
    creator: str
    created_at: str
    parents: tuple[str, ...]
    shredded_at: str | None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "media_type": self.media_type,
            "size": self.size,
            "digest": self.digest,
            "creator": self.creator,
            "created_at": self.created_at,
            "parents": list(self.parents),
            "shredded_at": self.shredded_at,
            "annotations": dict(self.annotations),
        }


@dataclass(frozen=True)
class SealedArtifact:
    """The rows a seal produced, ready to insert with the ledger event (and the plain data
    key, kept until then in case a rotation elsewhere destroys the KEK that wrapped it)."""

    artifact: ArtifactRow
    data_key: DataKeyRow
    dek: bytes = field(repr=False, compare=False)

    def wrap_under_current(self, keys: KeyProvider) -> None:
        """Wrap the data key again if *keys*' current KEK is no longer the one that wrapped
        it. Call after ``keys.refresh()``, with the ledger held so that no rotation comes
        between this and the commit."""
        if self.data_key.kek_id != keys.current_kek_id():
            wrapped = keys.wrap(self.dek, dek_context(self.artifact.id))
            self.data_key.kek_id, self.data_key.wrapped = wrapped.kek_id, wrapped.blob


def statement_fields(row: ArtifactRow) -> dict[str, Any]:
    """Parse the signed statement of *row* (raises IntegrityError if unreadable)."""
    try:
        fields = json.loads(row.statement)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or fields.get("_type") != STATEMENT_TYPE:
        raise IntegrityError(f"artifact {row.id}: signed statement is unreadable")
    return fields


def info_of(row: ArtifactRow) -> ArtifactInfo:
    """User-facing metadata from a row's signed statement."""
    fields = statement_fields(row)
    return ArtifactInfo(
        id=row.id,
        name=str(fields["name"]),
        kind=str(fields["kind"]),
        media_type=str(fields["media_type"]),
        size=int(fields["size"]),
        digest=str(fields["digest"]),
        creator=str(fields["creator"]),
        created_at=str(fields["created_at"]),
        parents=tuple(fields.get("parents", ())),
        shredded_at=row.shredded_at,
        annotations={str(k): str(v) for k, v in dict(fields.get("annotations") or {}).items()},
    )


def seal(
    source: Readable,
    draft: ArtifactDraft,
    *,
    blobs: BlobStore,
    keys: KeyProvider,
    signer: Signer,
    creator: str,
    created_at: str,
    params: StreamingParams,
) -> SealedArtifact:
    """Encrypt *source* into a new blob and sign its statement; nothing is inserted yet.

    The blob is durable when this returns. If the caller's transaction then fails, it
    should delete the blob (an unreferenced blob is harmless: it cannot be decrypted
    without the DEK, which was never stored).
    """
    artifact_id = uuid.uuid4().hex
    dek = os.urandom(DEK_SIZE)
    hasher = new_hasher(ARTIFACT_DIGEST)
    with blobs.writer() as writer:
        size = encrypt_stream(
            dek, associated_data(artifact_id), source, writer, params, hasher.update
        )
        writer.commit()
    statement = {
        "_type": STATEMENT_TYPE,
        "id": artifact_id,
        "name": draft.name,
        "kind": draft.kind,
        "media_type": draft.media_type or _KIND_MEDIA[draft.kind],
        "size": size,
        "digest": f"{ARTIFACT_DIGEST}:{hasher.hexdigest()}",
        "creator": creator,
        "created_at": created_at,
        "parents": list(draft.parents),
        "annotations": dict(draft.annotations),
        "blob": {
            "format": BLOB_FORMAT,
            "segment_size": params.segment_size,
            "key_size": params.key_size,
        },
    }
    body = canonical_json(statement)
    wrapped = keys.wrap(dek, dek_context(artifact_id))
    row = ArtifactRow(
        id=artifact_id,
        name=draft.name,
        kind=draft.kind,
        media_type=statement["media_type"],
        size=size,
        digest=statement["digest"],
        blob_name=writer.name,
        segment_size=params.segment_size,
        creator=creator,
        created_at=created_at,
        statement=body,
        signature=signer.sign(body),
    )
    return SealedArtifact(
        row, DataKeyRow(artifact_id=artifact_id, kek_id=wrapped.kek_id, wrapped=wrapped.blob), dek
    )


def check_row(row: ArtifactRow, creator_keys: Sequence[VerifyingKey]) -> dict[str, Any]:
    """Check the creator's signature (by any of *creator_keys*: its current key and those
    it rotated away from) and that the columns agree with the signed statement."""
    if not any(key.verify(row.signature, row.statement) for key in creator_keys):
        raise IntegrityError(f"artifact {row.id}: signature does not verify (metadata altered)")
    fields = statement_fields(row)
    columns = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "media_type": row.media_type,
        "size": row.size,
        "digest": row.digest,
        "creator": row.creator,
        "created_at": row.created_at,
    }
    for key, value in columns.items():
        if fields.get(key) != value:
            raise IntegrityError(
                f"artifact {row.id}: column {key} differs from its signed statement"
            )
    blob = fields.get("blob", {})
    if blob.get("format") != BLOB_FORMAT or blob.get("segment_size") != row.segment_size:
        raise IntegrityError(f"artifact {row.id}: blob parameters differ from its statement")
    return fields


def stream_params(row: ArtifactRow) -> StreamingParams:
    try:
        return StreamingParams(segment_size=row.segment_size)
    except ValueError:
        raise IntegrityError(f"artifact {row.id}: invalid segment size") from None


def sealed_size(row: ArtifactRow) -> int:
    """The exact size of *row*'s blob: what any intact copy of it measures."""
    return stream_params(row).ciphertext_size(row.size)


def live_artifacts(session: Session) -> list[ArtifactRow]:
    """Every artifact not crypto-shredded (each has a blob)."""
    query = select(ArtifactRow).where(ArtifactRow.shredded_at.is_(None))
    return list(session.execute(query).scalars())


def unwrap_key(row: ArtifactRow, key_row: DataKeyRow | None, keys: KeyProvider) -> bytes:
    if key_row is None:
        raise IntegrityError(f"artifact {row.id}: its data key is missing")
    return keys.unwrap(WrappedKey(key_row.kek_id, key_row.wrapped), dek_context(row.id))


def _digest_matches(expected: str, actual: str) -> bool:
    return hmac.compare_digest(expected.encode(), actual.encode())


def unseal(
    row: ArtifactRow,
    dek: bytes,
    blobs: BlobStore,
    sink: Writable | None,
) -> None:
    """Decrypt the blob of *row* into *sink* (or only check it when None), then compare the
    digest. The caller must discard *sink*'s content if this raises."""
    algorithm = row.digest.split(":", 1)[0]
    hasher = new_hasher(algorithm)
    with blobs.open(row.blob_name) as source:
        size = decrypt_stream(
            dek, associated_data(row.id), source, sink, stream_params(row), hasher.update
        )
    if size != row.size or not _digest_matches(row.digest, f"{algorithm}:{hasher.hexdigest()}"):
        raise IntegrityError(f"artifact {row.id}: content digest does not match its signature")


class VerifyingReader(DecryptingReader):
    """A file-like view of an artifact's plaintext.

    Every byte it returns comes from a segment whose tag verified. The whole-content digest
    is compared when the end is reached; a mismatch raises IntegrityError from ``read``, so
    a consumer that reads to the end never accepts altered content.
    """

    def __init__(self, row: ArtifactRow, dek: bytes, blobs: BlobStore) -> None:
        self._row = row
        self._source = blobs.open(row.blob_name)
        self._algorithm = row.digest.split(":", 1)[0]
        self._hasher = new_hasher(self._algorithm)
        self._size = 0
        super().__init__(dek, associated_data(row.id), self._source, stream_params(row))

    def _observe(self, segment: memoryview) -> None:
        self._hasher.update(segment)
        self._size += len(segment)

    def _at_end(self) -> None:
        actual = f"{self._algorithm}:{self._hasher.hexdigest()}"
        if self._size != self._row.size or not _digest_matches(self._row.digest, actual):
            raise IntegrityError(
                f"artifact {self._row.id}: content digest does not match its signature"
            )

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()
