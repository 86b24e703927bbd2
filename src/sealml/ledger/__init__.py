"""Tamper-evident audit ledger: events, Merkle tree, signed checkpoints, proofs, export."""

from .checkpoint import Checkpoint, NoteSigner, NoteVerifier, open_note
from .log import Event, EventDraft, EventFilter, InclusionProof, Ledger
from .verify import LedgerReport, verify_ledger

__all__ = [
    "Checkpoint",
    "Event",
    "EventDraft",
    "EventFilter",
    "InclusionProof",
    "Ledger",
    "LedgerReport",
    "NoteSigner",
    "NoteVerifier",
    "open_note",
    "verify_ledger",
]
