"""SQLAlchemy models of the metadata database.

Rows that matter for security carry the exact bytes that were signed or hashed
(``statement``, ``body``) beside the indexed columns derived from them, so verification can
detect an edit to either.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every sealml table."""


class MetaEntry(Base):
    """Workspace-wide settings recorded at init (workspace id, format versions)."""

    __tablename__ = "workspace_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class PrincipalRow(Base):
    """A user or service, its roles and its signing key (private half sealed by password)."""

    __tablename__ = "principals"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    roles: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(Text)
    key_box: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    kdf: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(64))
    record: Mapped[bytes] = mapped_column(LargeBinary)
    attestation: Mapped[bytes] = mapped_column(LargeBinary)
    # JSON [{"pem", "retired_at"}]: keys that signed before a rotation (added in 0006)
    retired_keys: Mapped[str | None] = mapped_column(Text, nullable=True)
    # who reset the password, until the principal changes it (added in 0007)
    password_reset_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SessionRow(Base):
    """A login session: the token's hash and the server half of the session key."""

    __tablename__ = "sessions"
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    key_share: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class ArtifactRow(Base):
    """Metadata of one sealed artifact; ``statement`` is what the creator signed."""

    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(160))
    blob_name: Mapped[str] = mapped_column(String(64), unique=True)
    segment_size: Mapped[int] = mapped_column(Integer)
    creator: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    statement: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    ledger_seq: Mapped[int] = mapped_column(BigInteger)
    shredded_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class DataKeyRow(Base):
    """An artifact's data key, wrapped by a key-encryption key."""

    __tablename__ = "data_keys"
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerEventRow(Base):
    """One audit event; ``body`` is the canonical JSON whose hash is the Merkle leaf."""

    __tablename__ = "ledger_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # No secondary indexes: each one costs appends dearly (random artifact ids scatter
    # B-tree inserts), audit filters are occasional scans, and artifacts find their put
    # event by sequence number (ArtifactRow.ledger_seq).
    ts: Mapped[str] = mapped_column(String(40))
    principal: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHeadRow(Base):
    """The single row holding the tree size, its right border (frontier) and last leaf."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    last_leaf: Mapped[bytes] = mapped_column(LargeBinary(32))


class CheckpointRow(Base):
    """A signed checkpoint (signed note) of the ledger at one tree size."""

    __tablename__ = "checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40))


class ArtifactParentRow(Base):
    """Lineage index: *child* was derived from *parent* (as its signed statement says)."""

    __tablename__ = "artifact_parents"
    child_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class AttestationRow(Base):
    """Which attestation artifact (a signed provenance envelope) covers an artifact."""

    __tablename__ = "attestations"
    subject_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    attestation_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), index=True)


class RunRow(Base):
    """One `sealml run` of a pipeline."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(255), index=True)
    executor: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(64))
    params: Mapped[str] = mapped_column(Text)
    started_at: Mapped[str] = mapped_column(String(40))
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16))


class StageRunRow(Base):
    """One stage of a run: executed or reused from the cache, with its outputs."""

    __tablename__ = "stage_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(255))
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    outputs: Mapped[str] = mapped_column(Text)
    attestation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_at: Mapped[str] = mapped_column(String(40))
    finished_at: Mapped[str] = mapped_column(String(40))


class ModelVersionRow(Base):
    """An immutable registered model version; ``statement`` is what the registrant signed."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    signature_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    scan_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    provenance_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    evaluation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    trained_by: Mapped[str] = mapped_column(String(64))
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[str] = mapped_column(String(40))
    statement: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    ledger_seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sbom_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # added in 0005


class ModelAliasMoveRow(Base):
    """One move of an alias (promote or rollback); the latest move is where it points."""

    __tablename__ = "model_alias_moves"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    ledger_seq: Mapped[int] = mapped_column(BigInteger)


class ModelApprovalRow(Base):
    """A second principal's approval, confirmed by TOTP, for one version on one alias."""

    __tablename__ = "model_approvals"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    alias: Mapped[str] = mapped_column(String(64))
    approver: Mapped[str] = mapped_column(String(64))
    approved_at: Mapped[str] = mapped_column(String(40))
    used_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ledger_seq: Mapped[int] = mapped_column(BigInteger)


class TotpRow(Base):
    """A principal's TOTP secret (sealed by a workspace key) and the last step it used."""

    __tablename__ = "totp_secrets"
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    secret_box: Mapped[bytes] = mapped_column(LargeBinary)
    last_step: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[str] = mapped_column(String(40))


class ApiKeyRow(Base):
    """A serving API key: its public id, a salted hash of its secret, and what it may do.

    The secret itself is shown once at creation and never stored.
    """

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[str] = mapped_column(Text)  # JSON list
    models: Mapped[str] = mapped_column(Text)  # JSON list of model names, or ["*"]
    created_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ledger_seq: Mapped[int] = mapped_column(BigInteger)
    # the workspace key's signature over the row's canonical record (added in 0008)
    attestation: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
