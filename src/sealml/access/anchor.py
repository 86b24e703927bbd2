"""What the workspace key attests, anchored in the ledger's signed checkpoints.

Principal rows and the approved policy are signed by the workspace key. That proves the
workspace wrote them, not that they are the newest: a row copied back from an older copy of
the database (from before a disable, a role change, a new key or password, a second
factor; a policy from before it was tightened) still verifies. So the workspace keeps an
*attested state*, a record in ``workspace_meta`` holding the fingerprint of each principal's
row (the signed record, the password-sealed key and the TOTP secret) and the digest of the
approved policy, and every checkpoint it signs carries the state's SHA-256 as an extension
line. Reading a principal or the policy checks it against the state and the state against
the newest trusted checkpoint, so a record restored or deleted on its own is refused.
Restoring the checkpoints as well rolls the ledger back, which the local witness and saved
checkpoints catch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ..crypto.canonical import canonical_json, parse_json
from ..db.meta import read_meta, write_meta
from ..db.models import PrincipalRow, TotpRow
from ..db.raw import select_rows
from ..errors import IntegrityError
from ..ledger import Checkpoint
from . import approval

# The first word of the checkpoint extension line: "sealml-attested <base64 SHA-256>".
EXTENSION = "sealml-attested"
STATE_KEY = "attested_state"
# session.info keys: what this transaction changed and has not anchored yet
_CHANGED = "sealml.changed_principals"
_POLICY_CHANGED = "sealml.changed_policy"


def mark_changed(session: Session, principal_id: str) -> None:
    """Note that *session* changed a principal's row or second factor: the next
    checkpoint of this transaction anchors its new fingerprint."""
    session.info.setdefault(_CHANGED, set()).add(principal_id)


def mark_policy_changed(session: Session) -> None:
    """Note that *session* approved a new policy: its next checkpoint anchors it."""
    session.info[_POLICY_CHANGED] = True


def changed_in(session: Session) -> set[str]:
    """The principals *session* changed and has not anchored yet."""
    changed: set[str] = session.info.get(_CHANGED, set())
    return changed


@event.listens_for(Session, "before_commit")
def _refuse_unanchored(session: Session) -> None:
    # A change committed without a checkpoint after it would be refused on every later
    # read; fail the transaction that made it instead (a bug, never user input).
    if session.info.get(_CHANGED) or session.info.get(_POLICY_CHANGED):
        raise RuntimeError("an attested record changed without a ledger checkpoint anchoring it")


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
class AttestedState:
    """Fingerprints of the principal rows (by id) and the approved policy's digest, as
    a checkpoint anchors them."""

    principals: Mapping[str, str] = field(default_factory=dict)
    policy: str | None = None

    def encode(self) -> bytes:
        return canonical_json(
            {"v": 1, "principals": dict(sorted(self.principals.items())), "policy": self.policy}
        )

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, text: str) -> AttestedState:
        try:
            record = parse_json(text.encode())
            if not isinstance(record, dict) or record.get("v") != 1:
                raise ValueError
            principals, policy = record["principals"], record["policy"]
            if not isinstance(principals, dict) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in principals.items()
            ):
                raise ValueError
            if policy is not None and not isinstance(policy, str):
                raise ValueError
        except (ValueError, KeyError):
            raise IntegrityError(
                "the attested state in the database is malformed; run `sealml audit verify`"
            ) from None
        return cls(principals, policy)


def extension_line(digest: bytes) -> str:
    """The checkpoint extension line that anchors an attested state of *digest*."""
    return f"{EXTENSION} {base64.b64encode(digest).decode()}"


def anchored_digest(checkpoint: Checkpoint) -> bytes | None:
    """The attested state digest a (verified) checkpoint anchors; None for a checkpoint
    written without one (by a sealml from before anchoring)."""
    for line in checkpoint.extensions:
        word, _, value = line.partition(" ")
        if word != EXTENSION:
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            digest = b""
        if len(digest) != hashlib.sha256().digest_size:
            raise IntegrityError("a checkpoint's attested state line is malformed")
        return digest
    return None


class Anchor:
    """Checks principal rows and the approved policy against the state the newest trusted
    checkpoint anchors, and brings the state up to date for each new checkpoint.

    *anchored* gives that checkpoint's state digest (None: no checkpoint anchors one yet,
    in a new workspace or one from before anchoring: its first new checkpoint anchors the
    records as they are).
    """

    def __init__(self, anchored: Callable[[Session], bytes | None]) -> None:
        self._anchored = anchored

    def state(self, session: Session) -> AttestedState | None:
        """The anchored state (its record checked against the checkpoint), or None."""
        anchored = self._anchored(session)
        return None if anchored is None else self._stored(session, anchored)

    @staticmethod
    def _stored(session: Session, anchored: bytes) -> AttestedState:
        stored = read_meta(session, STATE_KEY)
        state = None if stored is None else AttestedState.decode(stored)
        if state is None or not hmac.compare_digest(state.digest, anchored):
            raise IntegrityError(
                "the attested state in the database is not the one the ledger's latest "
                "checkpoint anchors (restored from an older copy or edited); run "
                "`sealml audit verify`"
            )
        return state

    def check_principals(self, session: Session, rows: Sequence[PrincipalRow]) -> None:
        """Refuse a row that is not the one the checkpoint anchors (restored from an older
        copy of the database, or its TOTP secret removed); rows this transaction changed
        are checked when it anchors them."""
        pending = changed_in(session)
        rows = [row for row in rows if row.id not in pending]
        state = self.state(session) if rows else None
        if state is None:
            return
        boxes = totp_boxes(session, [row.id for row in rows])
        for row in rows:
            if state.principals.get(row.id) != fingerprint(row, boxes.get(row.id)):
                raise IntegrityError(
                    f"principal {row.name!r} is not as the ledger's latest checkpoint "
                    "anchors it (its row was restored from an older copy of the database or "
                    "edited); an admin can set it again, see `sealml audit verify`"
                )

    def check_policy(self, session: Session, digest: str) -> None:
        """Refuse an approved policy (of record *digest*) that is not the anchored one."""
        if session.info.get(_POLICY_CHANGED):
            return
        state = self.state(session)
        if state is not None and state.policy is not None and state.policy != digest:
            raise IntegrityError(
                "the approved policy is not the one the ledger's latest checkpoint "
                "anchors (an older one was copied back into the database)"
            )

    def line(self, session: Session) -> str:
        """The extension line for the checkpoint *session* is about to sign: the state
        with what this transaction changed brought up to date (everything, when nothing
        is anchored yet). Unchanged records keep their anchored fingerprints, so signing a
        checkpoint never launders a restored one."""
        anchored = self._anchored(session)
        changed: set[str] = session.info.pop(_CHANGED, set())
        policy_changed = bool(session.info.pop(_POLICY_CHANGED, False))
        if anchored is not None and not changed and not policy_changed:
            return extension_line(anchored)
        query = select(PrincipalRow)
        principals: dict[str, str] = {}
        policy = None
        if anchored is not None:
            previous = self._stored(session, anchored)
            principals, policy = dict(previous.principals), previous.policy
            query = query.where(PrincipalRow.id.in_(sorted(changed)))
        rows = list(session.execute(query).scalars())
        boxes = totp_boxes(session, [row.id for row in rows])
        principals.update((row.id, fingerprint(row, boxes.get(row.id))) for row in rows)
        if anchored is None or policy_changed:
            policy = approval.record_digest(session)
        state = AttestedState(principals, policy)
        write_meta(session, STATE_KEY, state.encode().decode())
        return extension_line(state.digest)

    def problems(self, session: Session) -> list[str]:
        """What differs between the records and the anchored state (``audit verify``)."""
        try:
            state = self.state(session)
        except IntegrityError as error:
            return [str(error)]
        if state is None:
            return []
        rows = {row.id: row for row in session.execute(select(PrincipalRow)).scalars()}
        boxes = totp_boxes(session)
        problems = [
            f"principal {row.name!r}: its row (or TOTP secret) is not the anchored one "
            "(restored from an older copy or edited)"
            for row in rows.values()
            if state.principals.get(row.id) != fingerprint(row, boxes.get(row.id))
        ]
        problems += [
            f"principal {principal_id}: anchored, but its row was deleted"
            for principal_id in sorted(set(state.principals) - set(rows))
        ]
        if state.policy is not None and state.policy != approval.record_digest(session):
            problems.append("the approved policy is not the anchored one")
        return problems
