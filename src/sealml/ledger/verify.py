"""Full verification of the ledger: every body, hash, link, checkpoint and the tree head."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import CheckpointRow, LedgerEventRow, LedgerHeadRow
from ..errors import IntegrityError, UsageError
from .checkpoint import Checkpoint, NoteVerifier, open_note
from .log import ZERO_HASH
from .merkle import Frontier, leaf_hash

_MAX_PROBLEMS = 50
_COLUMNS = ("ts", "principal", "action", "resource", "outcome")


@dataclass
class LedgerReport:
    """What ledger verification found."""

    events: int = 0
    checkpoints: int = 0
    latest_checkpoint: int = 0
    root: bytes = b""
    unanchored: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)


def _check_body(report: LedgerReport, seq: int, row: tuple[object, ...], prev: bytes) -> None:
    try:
        fields = json.loads(row[6])  # type: ignore[arg-type]
    except ValueError:
        report.problem(f"event {seq}: body is not valid JSON")
        return
    if not isinstance(fields, dict):
        report.problem(f"event {seq}: body is not an object")
        return
    if fields.get("seq") != seq:
        report.problem(f"event {seq}: body says sequence {fields.get('seq')} (reordered?)")
    if fields.get("prev") != prev.hex():
        report.problem(f"event {seq}: hash chain broken (previous event changed or removed)")
    for index, column in enumerate(_COLUMNS, start=1):
        if fields.get(column) != row[index]:
            report.problem(f"event {seq}: column {column} differs from the signed body")


def verify_ledger(
    session: Session,
    origin: str,
    verifier: NoteVerifier,
    trusted: Iterable[Checkpoint] = (),
) -> LedgerReport:
    """Recompute every leaf, link and root; check every checkpoint and any *trusted* ones.

    *trusted* checkpoints are tree heads a user kept outside the workspace (or the local
    witness file): the ledger must still contain them as a prefix, otherwise it was rolled
    back or forked.
    """
    report = LedgerReport()
    checkpoints: dict[int, Checkpoint] = {}
    for stored in session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars():
        report.checkpoints += 1
        try:
            checkpoint = open_note(stored.note, verifier)
        except (IntegrityError, UsageError) as error:
            report.problem(f"checkpoint at size {stored.size}: {error}")
            continue
        if checkpoint.origin != origin:
            report.problem(f"checkpoint at size {stored.size}: origin {checkpoint.origin!r}")
        if checkpoint.size != stored.size or checkpoint.root != stored.root:
            report.problem(f"checkpoint at size {stored.size}: row differs from its signed note")
        checkpoints[checkpoint.size] = checkpoint
    expected: dict[int, list[tuple[str, bytes]]] = {}
    for size, checkpoint in checkpoints.items():
        expected.setdefault(size, []).append(("checkpoint", checkpoint.root))
    for checkpoint in trusted:
        if checkpoint.origin != origin:
            raise UsageError(f"trusted checkpoint is for another log ({checkpoint.origin!r})")
        expected.setdefault(checkpoint.size, []).append(("trusted checkpoint", checkpoint.root))

    frontier = Frontier()
    prev = ZERO_HASH
    rows = session.execute(
        select(
            LedgerEventRow.seq,
            LedgerEventRow.ts,
            LedgerEventRow.principal,
            LedgerEventRow.action,
            LedgerEventRow.resource,
            LedgerEventRow.outcome,
            LedgerEventRow.body,
            LedgerEventRow.leaf_hash,
        )
        .order_by(LedgerEventRow.seq)
        .execution_options(yield_per=20000)
    )
    _check_root(report, expected, frontier)
    for row in rows:
        seq = row[0]
        if seq != frontier.size:
            report.problem(f"event {frontier.size}: missing (next stored event is {seq})")
        leaf = leaf_hash(row[6])
        if leaf != row[7]:
            report.problem(f"event {seq}: stored leaf hash does not match its body")
        _check_body(report, seq, tuple(row), prev)
        frontier.append(leaf)
        prev = leaf
        if frontier.size in expected:
            _check_root(report, expected, frontier)
    report.events = frontier.size
    report.root = frontier.root()
    for size in sorted(s for s in expected if s > frontier.size):
        for label, _ in expected[size]:
            report.problem(
                f"{label} at size {size} but the ledger holds only {frontier.size} events "
                "(events deleted or the ledger rolled back)"
            )
    head = session.get(LedgerHeadRow, 1)
    if head is None:
        report.problem("ledger head row is missing")
    elif (head.size, head.frontier, head.last_leaf) != (
        frontier.size,
        frontier.to_bytes(),
        prev,
    ):
        report.problem("ledger head does not match the events")
    anchored = max((s for s in checkpoints if s <= frontier.size), default=0)
    report.latest_checkpoint = anchored
    report.unanchored = frontier.size - anchored
    return report


def _check_root(
    report: LedgerReport, expected: dict[int, list[tuple[str, bytes]]], frontier: Frontier
) -> None:
    root = frontier.root()
    for label, wanted in expected.get(frontier.size, []):
        if wanted != root:
            report.problem(
                f"{label} at size {frontier.size}: root hash differs from the events "
                "(edited, deleted or reordered events, or a forked log)"
            )
