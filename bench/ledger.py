"""Append 1,000,000 audit events in batches and verify the whole ledger.

Prints one JSON object: append rate (events/s, batched, each batch one transaction with a
signed checkpoint), full-verification time and rate, and the anchor measured in the same
run: raw SHA-256 leaf hashing of the same bodies (the floor any verifier pays).
Targets: >= 50,000 appends/s batched; full verification of 1M events in under 10 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.ledger import EventDraft, verify_ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sealml-bench-ledger-"))
    os.environ.setdefault("SEALML_STATE_DIR", str(base / "state"))
    ws = Workspace.init(
        base / "ws",
        passphrase=Secret("bench passphrase"),
        admin_password=Secret("bench-password"),
        kdf=FAST_PARAMS,
    )
    drafts = [
        EventDraft(
            principal=f"user-{i % 17}",
            action=("artifact.get", "artifact.put", "auth.login")[i % 3],
            resource=f"artifact:{i:032x}",
            details={"size": i * 7, "via": "bench"},
        )
        for i in range(args.batch)
    ]
    start = time.perf_counter()
    appended = 0
    while appended < args.events:
        batch = drafts[: min(args.batch, args.events - appended)]
        with ws.db.write() as session:
            ws.append(session, batch)
        appended += len(batch)
    append_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with ws.db.read() as session:
        report = verify_ledger(session, ws.config.ledger.origin, ws.verifier)
    verify_seconds = time.perf_counter() - start
    assert report.ok, report.problems[:3]

    with ws.db.read() as session:
        bodies = [
            bytes(row[0])
            for row in session.execute(
                __import__("sqlalchemy").text("SELECT body FROM ledger_events")
            )
        ]
    start = time.perf_counter()
    for body in bodies:
        hashlib.sha256(b"\x00" + body).digest()
    hash_seconds = time.perf_counter() - start
    total = report.events
    ws.close()
    result = {
        "benchmark": "ledger",
        "events": total,
        "batch": args.batch,
        "append_seconds": round(append_seconds, 2),
        "append_events_per_s": round(appended / append_seconds),
        "verify_seconds": round(verify_seconds, 2),
        "verify_events_per_s": round(total / verify_seconds),
        "checkpoints": report.checkpoints,
        "anchor_sha256_leaf_hashing_events_per_s": round(total / hash_seconds),
        "targets": {
            "append_events_per_s>=50000": appended / append_seconds >= 50_000,
            "verify_1M_under_10s": verify_seconds < 10 * total / 1_000_000,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
