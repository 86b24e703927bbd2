"""Audit operations: verify the ledger, show and export events, proofs, checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from ..errors import IntegrityError, UsageError
from ..ledger import Checkpoint, Event, EventFilter, Ledger, LedgerReport, verify_ledger
from ..ledger.proofs import check_consistency, encode_consistency, encode_inclusion
from .core import WorkspaceCore


class AuditOperations(WorkspaceCore):
    """Everything an auditor does with the ledger."""

    def audit_verify(self, trusted_notes: Iterable[str] = ()) -> LedgerReport:
        """Recompute the whole ledger and check it against every checkpoint, the local
        witness and any *trusted_notes* the caller kept."""
        self.authorize("audit:verify", "ledger", action="audit.verify")
        trusted: list[Checkpoint] = [self.open_checkpoint(note) for note in trusted_notes]
        unwitnessed: str | None = None
        try:
            witnessed = self.witness.load_checked()
        except IntegrityError as error:
            witnessed, unwitnessed = None, str(error)
        if witnessed is not None:
            trusted.append(witnessed)
        with self.db.read() as session:
            report = verify_ledger(session, self.config.ledger.origin, self.verifier, trusted)
            for problem in self.anchor.problems(session):
                report.problem(problem)
        if unwitnessed is not None:
            report.problem(unwitnessed)
        self.record(
            [
                self.event(
                    "audit.verify",
                    "ledger",
                    "ok" if report.ok else "failed",
                    events=report.events,
                    problems=len(report.problems),
                )
            ]
        )
        return report

    def audit_events(
        self, where: EventFilter, limit: int | None = None, *, newest_first: bool = False
    ) -> list[Event]:
        """Events matching *where*, oldest first (or newest first)."""
        self.authorize("audit:read", "ledger", action="audit.show")
        with self.db.read() as session:
            events = list(Ledger.events(session, where, limit, newest_first=newest_first))
        self.record([self.event("audit.show", "ledger", count=len(events))])
        return events

    def audit_export(self, sink: TextIO, where: EventFilter | None = None) -> int:
        """Write events as JSON lines (one object per event, with its leaf hash) for a SIEM."""
        self.authorize("audit:read", "ledger", action="audit.export")
        count = 0
        with self.db.read() as session:
            for event in Ledger.events(session, where or EventFilter()):
                line = event.fields()
                line["leaf_hash"] = event.leaf_hash.hex()
                sink.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
                count += 1
        self.record([self.event("audit.export", "ledger", count=count)])
        return count

    def audit_checkpoint(self) -> str:
        """Sign the current tree head (if needed) and return the latest checkpoint note."""
        self.authorize("audit:read", "ledger", action="audit.checkpoint")
        with self.transaction() as session:
            note = self.ledger.checkpoint(session, self.note_signer)
        return note

    def audit_prove(self, seq: int) -> str:
        """An inclusion proof of event *seq* (JSON) to check offline with the verifier key."""
        self.authorize("audit:read", f"event:{seq}", action="audit.prove")
        self.audit_checkpoint()
        with self.db.read() as session:
            return encode_inclusion(self.ledger.prove_inclusion(session, seq))

    def audit_consistency(self, old_note: str) -> str:
        """A consistency proof (JSON) from a saved checkpoint to the current one."""
        self.authorize("audit:read", "ledger", action="audit.prove")
        history = self.key_history()
        old = history.open(old_note)
        if old.origin != self.config.ledger.origin:
            raise UsageError("the saved checkpoint belongs to another workspace")
        self.audit_checkpoint()
        with self.db.read() as session:
            new_note, hashes = self.ledger.prove_consistency(session, old.size)
        proof = encode_consistency(old_note, new_note, hashes)
        check_consistency(proof, self.verifier, history.signers_at(old.size)[0])
        return proof
