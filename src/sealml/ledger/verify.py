"""Full verification of the ledger: every body, hash, link, checkpoint and the tree head.

Events are checked in ranges. For a large ledger the ranges are scanned by worker processes
(hashing and parsing are CPU-bound and hold the GIL), each with its own database connection,
while this process folds their leaf hashes into the Merkle tree in order and checks every
signed root along the way.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from sqlalchemy import Connection, create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ..crypto.canonical import parse_json
from ..db.models import CheckpointRow, LedgerEventRow, LedgerHeadRow
from ..db.raw import driver_cursor, driver_sql
from ..errors import IntegrityError, UsageError
from .checkpoint import Checkpoint, NoteVerifier
from .keyhistory import KeyHistory, recorded_handovers
from .log import ZERO_HASH, Ledger
from .merkle import HASH_SIZE, Frontier

_MAX_PROBLEMS = 50
_FETCH = 20_000
_RANGE = 125_000
_COLUMNS = ("ts", "principal", "action", "resource", "outcome")
_SELECT = (
    "SELECT seq, ts, principal, action, resource, outcome, body, leaf_hash "
    "FROM ledger_events WHERE seq >= ? AND seq < ? ORDER BY seq"
)


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


@dataclass
class _RangeResult:
    """One scanned range: its leaves in order, what was wrong inside it, and the links at
    its edges (checked by the caller, who knows the neighbouring ranges)."""

    leaves: bytes = b""
    first_seq: int | None = None
    first_prev: str | None = None
    problems: list[str] = field(default_factory=list)


def _explain(seq: int, row: tuple[Any, ...], fields: Any, prev_hex: str | None) -> list[str]:
    if not isinstance(fields, dict):
        return [f"event {seq}: body is not a JSON object"]
    problems = []
    if fields.get("seq") != seq:
        problems.append(f"event {seq}: body says sequence {fields.get('seq')} (reordered?)")
    if prev_hex is not None and fields.get("prev") != prev_hex:
        problems.append(f"event {seq}: hash chain broken (previous event changed or removed)")
    for index, column in enumerate(_COLUMNS, start=1):
        if fields.get(column) != row[index]:
            problems.append(f"event {seq}: column {column} differs from the signed body")
    return problems


def _scan(rows: Iterable[tuple[Any, ...]], start: int, stop: int) -> _RangeResult:
    """Check every row of one range; the hot loop of ledger verification."""
    result = _RangeResult()
    leaves = bytearray()
    problems = result.problems
    prev_hex: str | None = None
    expected = start
    for row in rows:
        seq = row[0]
        body = bytes(row[6])
        if seq != expected:
            problems.append(f"event {expected}: missing (next stored event is {seq})")
        leaf = sha256(b"\x00" + body).digest()
        if leaf != bytes(row[7]):
            problems.append(f"event {seq}: stored leaf hash does not match its body")
        try:
            fields = parse_json(body)
        except ValueError:
            fields = None
        if result.first_seq is None:
            result.first_seq = seq
            result.first_prev = fields.get("prev") if isinstance(fields, dict) else None
            link = None
        else:
            link = prev_hex
        try:
            clean = (
                fields["seq"] == seq
                and (link is None or fields["prev"] == link)
                and fields["ts"] == row[1]
                and fields["principal"] == row[2]
                and fields["action"] == row[3]
                and fields["resource"] == row[4]
                and fields["outcome"] == row[5]
            )
        except (KeyError, TypeError):
            clean = False
        if not clean:
            problems.extend(_explain(seq, row, fields, link))
        leaves += leaf
        prev_hex = leaf.hex()
        expected = seq + 1
        if len(problems) > _MAX_PROBLEMS:
            del problems[_MAX_PROBLEMS:]
    if expected < stop:
        problems.append(f"event {expected}: missing (next stored event is {stop} or later)")
    result.leaves = bytes(leaves)
    return result


def _rows(connection: Connection, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    statement = driver_sql(connection, _SELECT)
    if statement is None:
        table = LedgerEventRow
        query = (
            select(
                table.seq,
                table.ts,
                table.principal,
                table.action,
                table.resource,
                table.outcome,
                table.body,
                table.leaf_hash,
            )
            .where(table.seq >= start, table.seq < stop)
            .order_by(table.seq)
        )
        yield from (tuple(row) for row in connection.execute(query))
        return
    cursor = driver_cursor(connection)
    try:
        cursor.execute(statement, (start, stop))
        while batch := cursor.fetchmany(_FETCH):
            yield from batch
    finally:
        cursor.close()


def _scan_in_worker(url: str, start: int, stop: int) -> _RangeResult:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return _scan(_rows(connection, start, stop), start, stop)
    finally:
        engine.dispose()


def _scan_ranges(session: Session, stop: int) -> Iterator[_RangeResult]:
    """Range results in order: in worker processes for a large ledger on several cores."""
    bounds = [(start, min(start + _RANGE, stop)) for start in range(0, stop, _RANGE)]
    connection = session.connection()
    workers = min(os.cpu_count() or 1, 4)
    url = connection.engine.url
    if len(bounds) < 3 or workers < 2 or url.database in (None, "", ":memory:"):
        for start, end in bounds:
            yield _scan(_rows(connection, start, end), start, end)
        return
    context = multiprocessing.get_context("fork")
    link = url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_scan_in_worker, link, start, end) for start, end in bounds]
        for future in futures:
            yield future.result()


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
    expected = _expected_roots(session, origin, verifier, trusted, report)
    (highest,) = session.execute(select(func.max(LedgerEventRow.seq))).one()
    stop = -1 if highest is None else int(highest)
    frontier = Frontier()
    prev = ZERO_HASH
    _check_root(report, expected, frontier)
    for chunk in _scan_ranges(session, stop + 1):
        if chunk.first_seq is not None and chunk.first_prev != prev.hex():
            report.problem(
                f"event {chunk.first_seq}: hash chain broken (previous event changed or removed)"
            )
        for problem in chunk.problems:
            report.problem(problem)
        leaves = chunk.leaves
        for offset in range(0, len(leaves), HASH_SIZE):
            frontier.append(leaves[offset : offset + HASH_SIZE])
            if frontier.size in expected:
                _check_root(report, expected, frontier)
        if leaves:
            prev = leaves[-HASH_SIZE:]
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
    anchored = max(
        (
            s
            for s, labels in expected.items()
            if s <= frontier.size and any(label == "checkpoint" for label, _ in labels)
        ),
        default=0,
    )
    report.latest_checkpoint = anchored
    report.unanchored = frontier.size - anchored
    return report


def _expected_roots(
    session: Session,
    origin: str,
    verifier: NoteVerifier,
    trusted: Iterable[Checkpoint],
    report: LedgerReport,
) -> dict[int, list[tuple[str, bytes]]]:
    """Tree size → roots the events must reproduce: every stored checkpoint whose
    signature verifies (by the key in force at its size, both keys at a rotation's
    handover), and every trusted checkpoint."""
    expected: dict[int, list[tuple[str, bytes]]] = {}
    try:
        history = KeyHistory.read(session, verifier, scan=True)
        if recorded_handovers(session) != history.handovers:
            report.problem("the index of workspace key rotations differs from the ledger")
    except IntegrityError as error:
        report.problem(str(error))
        history = KeyHistory(verifier)
    stored_sizes: set[int] = set()
    for stored in session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars():
        report.checkpoints += 1
        stored_sizes.add(stored.size)
        try:
            checkpoint = history.open(stored.note)
        except (IntegrityError, UsageError) as error:
            report.problem(f"checkpoint at size {stored.size}: {error}")
            continue
        if checkpoint.origin != origin:
            report.problem(f"checkpoint at size {stored.size}: origin {checkpoint.origin!r}")
        if checkpoint.size != stored.size or checkpoint.root != stored.root:
            report.problem(f"checkpoint at size {stored.size}: row differs from its signed note")
        expected.setdefault(checkpoint.size, []).append(("checkpoint", checkpoint.root))
    for handover in history.handovers:
        if handover.size not in stored_sizes:
            report.problem(
                f"event {handover.seq}: a workspace key rotation without the checkpoint "
                "both keys sign"
            )
    for checkpoint in trusted:
        if checkpoint.origin != origin:
            raise UsageError(f"trusted checkpoint is for another log ({checkpoint.origin!r})")
        expected.setdefault(checkpoint.size, []).append(("trusted checkpoint", checkpoint.root))
        if checkpoint.size not in stored_sizes and checkpoint.size <= Ledger.size(session):
            # Every checkpoint a user keeps came from this table: its events are there,
            # so the row was deleted (hiding what that checkpoint anchors).
            report.problem(
                f"the trusted checkpoint at size {checkpoint.size} is missing from the "
                "stored checkpoints (deleted)"
            )
    return expected


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
