"""Which key signed the ledger's checkpoints when: the workspace key's rotations.

A rotation (``sealml keys rotate-workspace-key``) is an event, ``keys.workspace-key``,
naming the previous verifier key and the next one. The checkpoint that first covers it (the
*handover*, tree size = its sequence number + 1) is signed by both keys, the old one first;
smaller checkpoints by the old key only, larger ones by the new key only. So anyone who
trusts an old key can follow the chain to the key in force, and nobody without the old key
can start a chain of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..db.meta import read_meta, write_meta
from ..db.models import CheckpointRow
from ..errors import IntegrityError, UsageError
from .checkpoint import Checkpoint, NoteVerifier, open_note, unverified_checkpoint
from .log import Event, EventFilter, Ledger

ROTATION = "keys.workspace-key"
ROTATIONS_INDEX = "workspace_key_rotations"  # workspace_meta: the rotation events' seqs


@dataclass(frozen=True)
class Handover:
    """One rotation: the event's sequence number and the keys before and after it."""

    seq: int
    previous: NoteVerifier
    verifier: NoteVerifier

    @property
    def size(self) -> int:
        """The tree size of the checkpoint both keys sign."""
        return self.seq + 1


@dataclass(frozen=True)
class KeyHistory:
    """The key in force now and the handovers that led to it, oldest first."""

    current: NoteVerifier
    handovers: tuple[Handover, ...] = ()

    def signers_at(self, size: int) -> tuple[NoteVerifier, ...]:
        """The keys that must all have signed a checkpoint of *size* events."""
        key = self.handovers[0].previous if self.handovers else self.current
        for handover in self.handovers:
            if size < handover.size:
                return (key,)
            if size == handover.size:
                return (handover.previous, handover.verifier)
            key = handover.verifier
        return (key,)

    def open(self, note: str) -> Checkpoint:
        """A checkpoint note, checked against the key (or keys) in force at its size."""
        checkpoint = unverified_checkpoint(note)
        for verifier in self.signers_at(checkpoint.size):
            checkpoint = open_note(note, verifier)
        return checkpoint

    def check_handovers(self, session: Session, since: NoteVerifier) -> None:
        """Check that each handover from *since* on is in a checkpoint both its keys sign
        (IntegrityError otherwise): what lets a process that trusts *since* take up the
        key in force, and nobody without a key in force start a chain."""
        following = False
        for handover in self.handovers:
            following = following or handover.previous == since
            if not following:
                continue
            stored = session.get(CheckpointRow, handover.size)
            if stored is None:
                raise IntegrityError(
                    f"event {handover.seq}: a workspace key rotation without its handover "
                    "checkpoint"
                )
            open_note(stored.note, handover.previous)
            open_note(stored.note, handover.verifier)
        if not following and self.handovers:
            raise IntegrityError("the ledger records no rotation from the key this process trusts")

    @classmethod
    def read(cls, session: Session, current: NoteVerifier, *, scan: bool = False) -> KeyHistory:
        """The history the ledger records, which must end at *current* (the verifier key
        in ``sealml.toml``); IntegrityError otherwise. Signatures are checked by whoever
        opens a note with it (and the whole chain by ``audit verify``, which reads it
        with *scan*: from every event, not the index of rotations)."""
        handovers = recorded_handovers(session, scan=scan)
        if handovers and handovers[-1].verifier != current:
            raise IntegrityError(
                "the ledger's last workspace key rotation does not lead to the verifier key "
                "in sealml.toml"
            )
        return cls(current, handovers)


def note_rotation(session: Session, seq: int) -> None:
    """Add the rotation event *seq* to the index of rotations (in its transaction), so
    that reading the history does not scan the whole ledger."""
    stored = read_meta(session, ROTATIONS_INDEX)
    indexed = [] if stored is None else _indexed(stored)
    write_meta(session, ROTATIONS_INDEX, json.dumps([*indexed, seq]))


def _indexed(value: str) -> list[int]:
    try:
        seqs = json.loads(value)
        if isinstance(seqs, list) and all(isinstance(s, int) for s in seqs):
            return seqs
    except ValueError:
        pass
    raise IntegrityError("the index of workspace key rotations is unreadable")


def _rotation_events(session: Session, scan: bool) -> Iterator[Event]:
    if scan:
        yield from Ledger.events(session, EventFilter(action=ROTATION, outcome="ok"))
        return
    stored = read_meta(session, ROTATIONS_INDEX)
    for seq in _indexed(stored) if stored is not None else []:
        event = Ledger.event(session, seq)
        fields = event.fields()
        if fields.get("action") != ROTATION or fields.get("outcome") != "ok":
            raise IntegrityError(f"event {seq} is indexed as a workspace key rotation; it is none")
        yield event


def recorded_handovers(session: Session, *, scan: bool = False) -> tuple[Handover, ...]:
    """Every rotation the ledger records, oldest first, each from the key the one before
    led to (IntegrityError otherwise): from the index of rotations, or with *scan* from
    every event of the ledger."""
    handovers: list[Handover] = []
    for event in _rotation_events(session, scan):
        details = event.fields().get("details") or {}
        try:
            handover = Handover(
                event.seq,
                NoteVerifier.decode(str(details["previous"])),
                NoteVerifier.decode(str(details["verifier"])),
            )
        except (KeyError, TypeError, UsageError):
            raise IntegrityError(
                f"event {event.seq}: a workspace key rotation without readable keys"
            ) from None
        if handovers and handover.previous != handovers[-1].verifier:
            raise IntegrityError(
                f"event {event.seq}: a workspace key rotation from a key that was not in force"
            )
        handovers.append(handover)
    return tuple(handovers)
