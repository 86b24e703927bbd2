"""The append-only audit ledger: hash-chained events in an RFC 9162 Merkle tree.

Each event is stored as canonical JSON (``body``) holding its sequence number, time,
principal, action, resource, outcome, details and the leaf hash of the event before it.
Its Merkle leaf is ``SHA-256(0x00 || body)``. Appends run inside the caller's transaction,
update the single ``ledger_head`` row (size, frontier, last leaf) under a write lock and,
when a signer is available, record a signed checkpoint of the new tree head.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..clock import utc_now
from ..crypto.canonical import canonical_json
from ..db.models import CheckpointRow, LedgerEventRow, LedgerHeadRow
from ..db.raw import execute, insert_rows
from ..errors import IntegrityError, NotFoundError, UsageError
from .checkpoint import Checkpoint, NoteSigner, last_signed_by
from .merkle import Frontier, consistency_proof, inclusion_proof

ZERO_HASH = bytes(32)
EVENT_VERSION = 1
OUTCOMES = ("ok", "denied", "failed")
MAX_SEQ = 2**62


@dataclass(frozen=True)
class EventDraft:
    """An event to append: who did what to which resource, and how it ended."""

    principal: str
    action: str
    resource: str
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A stored event."""

    seq: int
    body: bytes
    leaf_hash: bytes

    def fields(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass(frozen=True)
class EventFilter:
    """Conditions for :meth:`Ledger.events`; None means any."""

    principal: str | None = None
    action: str | None = None
    resource: str | None = None
    since: str | None = None
    until: str | None = None
    outcome: str | None = None
    before_seq: int | None = None
    from_seq: int | None = None  # only events numbered at least this (a range of the key)


@dataclass(frozen=True)
class InclusionProof:
    """Everything needed to check offline that one event is in a signed tree head."""

    event: bytes
    leaf_index: int
    tree_size: int
    hashes: list[bytes]
    checkpoint_note: str


_INSERT = (
    "INSERT INTO ledger_events (seq, ts, principal, action, resource, outcome, body, leaf_hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_HEAD = "SELECT size, frontier, last_leaf FROM ledger_head WHERE id = 1"
_SET_HEAD = "UPDATE ledger_head SET size = ?, frontier = ?, last_leaf = ? WHERE id = 1"
_LATEST_CHECKPOINT = "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"


def _head(session: Session, lock: bool) -> tuple[int, bytes, bytes]:
    """The tree head's size, frontier and last leaf; with *lock*, held until the
    transaction ends (SQLite's write transactions are exclusive already)."""
    locking = lock and session.connection().dialect.name != "sqlite"
    rows = execute(session, _HEAD + (" FOR UPDATE" if locking else ""))
    if not rows:
        raise UsageError("the ledger has no tree head; run audit verify")
    size, frontier, last_leaf = rows[0]
    return int(size), bytes(frontier), bytes(last_leaf)


# The extension lines a checkpoint about to be signed in a session should carry.
ExtensionSource = Callable[[Session], Sequence[str]]


class Ledger:
    """The ledger of one workspace; every method works inside a caller's session.

    *extensions* gives the extension lines of each new checkpoint (what else its
    signature should vouch for at that tree size).
    """

    def __init__(self, origin: str, extensions: ExtensionSource | None = None) -> None:
        self.origin = origin
        self._extensions = extensions
        # the last checkpoint note this object signed (its writer need not verify it)
        self.last_signed: str | None = None

    # -- writing --------------------------------------------------------------------------

    @staticmethod
    def initialise(session: Session) -> None:
        """Create the empty tree head (at workspace creation)."""
        insert_rows(session, [LedgerHeadRow(id=1, size=0, frontier=b"", last_leaf=ZERO_HASH)])

    @staticmethod
    def hold(session: Session) -> None:
        """Hold the tree head until *session*'s transaction ends: every append elsewhere
        waits for it (what SQLite's write transactions do anyway)."""
        _head(session, lock=True)

    def append(
        self,
        session: Session,
        drafts: Sequence[EventDraft],
        signer: NoteSigner | None = None,
    ) -> list[int]:
        """Append *drafts* in order; returns their sequence numbers.

        With a *signer*, a checkpoint of the new tree head is recorded in the same
        transaction, so the events are anchored the moment they commit.
        """
        size, stored_frontier, previous = _head(session, lock=True)
        frontier = Frontier.from_bytes(size, stored_frontier)
        seqs: list[int] = []
        ts = utc_now()  # one append, one time: events of a batch are recorded together
        rows: list[tuple[int, str, str, str, str, str, bytes, bytes]] = []
        append_leaf = frontier.append
        for draft in drafts:
            if draft.outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {draft.outcome!r}")
            seq = frontier.size
            body = canonical_json(
                {
                    "v": EVENT_VERSION,
                    "seq": seq,
                    "ts": ts,
                    "principal": draft.principal,
                    "action": draft.action,
                    "resource": draft.resource,
                    "outcome": draft.outcome,
                    "details": draft.details,
                    "prev": previous.hex(),
                }
            )
            leaf = sha256(b"\x00" + body).digest()
            append_leaf(leaf)
            rows.append(
                (seq, ts, draft.principal, draft.action, draft.resource, draft.outcome, body, leaf)
            )
            seqs.append(seq)
            previous = leaf
        if rows:
            # the driver's executemany: batches run to tens of thousands of rows
            execute(session, _INSERT, rows, many=True)
        execute(session, _SET_HEAD, (frontier.size, frontier.to_bytes(), previous))
        if signer is not None:
            self._record_checkpoint(session, frontier, signer)
        return seqs

    def _record_checkpoint(
        self, session: Session, frontier: Frontier, signer: NoteSigner, *cosigners: NoteSigner
    ) -> str | None:
        """Sign the tree head unless it is signed already; None when *signer* is not the
        key in force: the latest checkpoint's last signature is by another key, so the
        workspace key was rotated since this process opened it (its events stay
        unanchored until a process holding the new key signs)."""
        latest = self._latest(session)
        if latest is not None:
            size, latest_note = latest
            if size == frontier.size:
                return latest_note
            if not last_signed_by(latest_note, signer.verifier):
                return None
        extensions = self._extensions(session) if self._extensions else ()
        checkpoint = Checkpoint(self.origin, frontier.size, frontier.root(), tuple(extensions))
        note = checkpoint.sign(signer, *cosigners)
        row = CheckpointRow(
            size=frontier.size, root=checkpoint.root, note=note, created_at=utc_now()
        )
        insert_rows(session, [row])
        self.last_signed = note
        return note

    def checkpoint(self, session: Session, signer: NoteSigner, *cosigners: NoteSigner) -> str:
        """Sign the current tree head (if not yet signed) and return its note; with
        *cosigners*, each signs it too (a workspace key rotation's handover)."""
        size, frontier, _ = _head(session, lock=True)
        note = self._record_checkpoint(
            session, Frontier.from_bytes(size, frontier), signer, *cosigners
        )
        if note is None:
            raise IntegrityError(
                "the workspace key was rotated since this process opened the workspace; "
                "open it again"
            )
        return note

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def size(session: Session) -> int:
        rows = execute(session, _HEAD)
        return int(rows[0][0]) if rows else 0

    @staticmethod
    def latest_checkpoint(session: Session) -> CheckpointRow | None:
        return session.execute(
            select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)
        ).scalar_one_or_none()

    @staticmethod
    def _latest(session: Session) -> tuple[int, str] | None:
        """The latest stored checkpoint's size and note (one indexed row, without the ORM:
        read on every append and every principal read)."""
        rows = execute(session, _LATEST_CHECKPOINT)
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    @staticmethod
    def latest_note(session: Session) -> str | None:
        """The latest stored checkpoint's note."""
        latest = Ledger._latest(session)
        return None if latest is None else latest[1]

    @staticmethod
    def checkpoint_notes(session: Session, *, newest_first: bool = False) -> Iterator[str]:
        """Every stored checkpoint note, by tree size, fetched as the caller goes (a
        caller looking for the newest one that verifies usually stops at the first)."""
        order = CheckpointRow.size.desc() if newest_first else CheckpointRow.size
        yield from session.execute(select(CheckpointRow.note).order_by(order)).scalars()

    @staticmethod
    def event(session: Session, seq: int) -> Event:
        row = session.get(LedgerEventRow, seq) if 0 <= seq < MAX_SEQ else None
        if row is None:
            raise NotFoundError(f"no ledger event {seq}")
        return Event(row.seq, row.body, row.leaf_hash)

    @staticmethod
    def events(
        session: Session,
        where: EventFilter,
        limit: int | None = None,
        *,
        newest_first: bool = False,
    ) -> Iterator[Event]:
        """Events matching *where*, oldest first (or newest first)."""
        query = select(LedgerEventRow.seq, LedgerEventRow.body, LedgerEventRow.leaf_hash)
        if where.principal is not None:
            query = query.where(LedgerEventRow.principal == where.principal)
        if where.action is not None:
            if where.action.endswith("*"):
                query = query.where(LedgerEventRow.action.startswith(where.action[:-1]))
            else:
                query = query.where(LedgerEventRow.action == where.action)
        if where.resource is not None:
            query = query.where(LedgerEventRow.resource == where.resource)
        if where.outcome is not None:
            query = query.where(LedgerEventRow.outcome == where.outcome)
        if where.since is not None:
            query = query.where(LedgerEventRow.ts >= where.since)
        if where.until is not None:
            query = query.where(LedgerEventRow.ts < where.until)
        if where.before_seq is not None:
            query = query.where(LedgerEventRow.seq < where.before_seq)
        if where.from_seq is not None:
            query = query.where(LedgerEventRow.seq >= where.from_seq)
        order = LedgerEventRow.seq.desc() if newest_first else LedgerEventRow.seq
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        for seq, body, leaf in session.execute(query.execution_options(yield_per=5000)):
            yield Event(seq, body, leaf)

    @staticmethod
    def leaves(session: Session, size: int) -> list[bytes]:
        """The stored leaf hashes of the first *size* events."""
        rows = session.execute(
            select(LedgerEventRow.leaf_hash)
            .where(LedgerEventRow.seq < size)
            .order_by(LedgerEventRow.seq)
            .execution_options(yield_per=50000)
        )
        leaves = [leaf for (leaf,) in rows]
        if len(leaves) != size:
            raise UsageError("the ledger has fewer events than its checkpoint; run audit verify")
        return leaves

    def prove_inclusion(self, session: Session, seq: int) -> InclusionProof:
        """An inclusion proof of event *seq* against the latest signed checkpoint."""
        event = self.event(session, seq)
        checkpoint = self.latest_checkpoint(session)
        if checkpoint is None or checkpoint.size <= seq:
            raise UsageError(
                f"event {seq} is not yet covered by a signed checkpoint; "
                "run a command that unlocks the workspace, then prove again"
            )
        leaves = self.leaves(session, checkpoint.size)
        return InclusionProof(
            event=event.body,
            leaf_index=seq,
            tree_size=checkpoint.size,
            hashes=inclusion_proof(seq, leaves),
            checkpoint_note=checkpoint.note,
        )

    def prove_consistency(self, session: Session, old_size: int) -> tuple[str, list[bytes]]:
        """A consistency proof from a tree of *old_size* to the latest signed checkpoint."""
        checkpoint = self.latest_checkpoint(session)
        if checkpoint is None:
            raise UsageError("the ledger has no signed checkpoint yet")
        if old_size > checkpoint.size:
            raise UsageError(
                f"the saved checkpoint (size {old_size}) is larger than the ledger's "
                f"(size {checkpoint.size}): the ledger was rolled back or forked"
            )
        if old_size == 0:
            return checkpoint.note, []
        return checkpoint.note, consistency_proof(old_size, self.leaves(session, checkpoint.size))
