"""Principal records anchored in the ledger's signed checkpoints.

A principal's row is signed by the workspace key. That proves the workspace wrote it, not
that it is the newest: a row copied back from an older copy of the database (from before a
disable, a role change, a new key or password, a second factor) still verifies. So the
workspace keeps a *principal state*, a record in ``workspace_meta`` mapping each principal
to the fingerprint of its row (the signed record, the password-sealed key and the TOTP
secret), and every checkpoint it signs carries the state's SHA-256 as an extension line.
Reading a principal checks its row against the state and the state against the latest
checkpoint, so a row (or a TOTP secret) restored or deleted on its own is refused.
Restoring the checkpoints as well rolls the ledger back, which the local witness and saved
checkpoints catch.

This module holds the formats; :class:`~sealml.access.principals.PrincipalStore` keeps the
state up to date and checks rows against it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session

from ..crypto.canonical import canonical_json, parse_json
from ..db.models import MetaEntry, PrincipalRow, TotpRow
from ..db.raw import select_one, select_rows
from ..errors import IntegrityError
from ..ledger import Checkpoint

# The first word of the checkpoint extension line: "sealml-principals <base64 SHA-256>".
EXTENSION = "sealml-principals"
STATE_KEY = "principal_state"
# session.info key: ids of principals this transaction changed (not anchored yet).
_CHANGED = "sealml.changed_principals"


def mark_changed(session: Session, principal_id: str) -> None:
    """Note that *session* changed a principal's row or second factor: the next
    checkpoint of this transaction anchors its new fingerprint."""
    session.info.setdefault(_CHANGED, set()).add(principal_id)


def changed_in(session: Session) -> set[str]:
    """The principals *session* changed and has not anchored yet."""
    changed: set[str] = session.info.get(_CHANGED, set())
    return changed


def take_changed(session: Session) -> set[str]:
    """The principals *session* changed; they count as anchored from now on."""
    changed: set[str] = session.info.pop(_CHANGED, set())
    return changed


@event.listens_for(Session, "before_commit")
def _refuse_unanchored(session: Session) -> None:
    # A change committed without a checkpoint after it would be refused on every later
    # read; fail the transaction that made it instead (a bug, never user input).
    if session.info.get(_CHANGED):
        raise RuntimeError("a principal changed without a ledger checkpoint anchoring it")


def fingerprint(row: PrincipalRow, totp_box: bytes | None) -> str:
    """What a principal's row must still be: its signed record, its password-sealed key
    and its TOTP secret (sealed), as a hex SHA-256. The TOTP row's last used step is
    left out: it moves with every code."""

    def digest(value: bytes | str | None) -> str | None:
        if value is None:
            return None
        data = value.encode() if isinstance(value, str) else bytes(value)
        return hashlib.sha256(data).hexdigest()

    parts = {
        "record": digest(row.record),
        "key_box": digest(row.key_box),
        "kdf": digest(row.kdf),
        "totp": digest(totp_box),
    }
    return hashlib.sha256(canonical_json(parts)).hexdigest()


def totp_boxes(session: Session, principal_ids: Iterable[str] | None = None) -> dict[str, bytes]:
    """principal id → sealed TOTP secret, for *principal_ids* (all when None)."""
    if principal_ids is None:
        rows = select_rows(session, TotpRow, "1 = 1", ())
    else:
        ids = sorted(set(principal_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = select_rows(session, TotpRow, f"principal_id IN ({marks})", ids)
    return {row.principal_id: bytes(row.secret_box) for row in rows}


@dataclass(frozen=True)
class PrincipalState:
    """Principal id → fingerprint of its row, as the latest checkpoint anchors them."""

    rows: Mapping[str, str]

    def encode(self) -> bytes:
        return canonical_json({"v": 1, "rows": dict(sorted(self.rows.items()))})

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, text: str) -> PrincipalState:
        try:
            record = parse_json(text.encode())
            if not isinstance(record, dict) or record.get("v") != 1:
                raise ValueError
            rows = record["rows"]
            if not isinstance(rows, dict) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in rows.items()
            ):
                raise ValueError
        except (ValueError, KeyError):
            raise IntegrityError(
                "the principal state in the database is malformed; run `sealml audit verify`"
            ) from None
        return cls(rows)


def extension_line(digest: bytes) -> str:
    """The checkpoint extension line that anchors a principal state of *digest*."""
    return f"{EXTENSION} {base64.b64encode(digest).decode()}"


def anchored_digest(checkpoint: Checkpoint) -> bytes | None:
    """The principal state digest a (verified) checkpoint anchors; None for a checkpoint
    written without one (by a sealml from before principal anchoring)."""
    for line in checkpoint.extensions:
        word, _, value = line.partition(" ")
        if word != EXTENSION:
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            digest = b""
        if len(digest) != hashlib.sha256().digest_size:
            raise IntegrityError("a checkpoint's principal state line is malformed")
        return digest
    return None


def load_state(session: Session) -> PrincipalState | None:
    """The principal state stored in *session*'s database (not checked)."""
    entry = select_one(session, MetaEntry, "key = ?", (STATE_KEY,))
    return None if entry is None else PrincipalState.decode(entry.value)


def store_state(session: Session, state: PrincipalState) -> None:
    """Keep *state* as the workspace's principal state (in this transaction)."""
    value = state.encode().decode()
    entry = session.get(MetaEntry, STATE_KEY)
    if entry is None:
        session.add(MetaEntry(key=STATE_KEY, value=value))
    else:
        entry.value = value
    session.flush()
