"""The runner: caching, tamper stops, failed stages, permissions, provenance forgery."""

from __future__ import annotations

import base64
import copy
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.crypto.canonical import canonical_json
from sealml.crypto.dsse import sign_envelope
from sealml.db.models import AttestationRow
from sealml.errors import IntegrityError, PermissionDeniedError, UsageError
from sealml.ledger import EventFilter
from sealml.pipeline.execution import StageFailedError
from sealml.pipeline.executors import SandboxExecutor
from sealml.pipeline.loader import load_pipeline
from sealml.provenance.intoto import PAYLOAD_TYPE
from sealml.store.blobs import LocalBlobStore

from ..conftest import reopen


def run(ws: Workspace, path: Path, executor: Any = "local", **params: Any) -> Any:
    return ws.run_pipeline(load_pipeline(path), executor, params)


def statuses(report: Any) -> dict[str, str]:
    return {s.stage: s.status for s in report.stages}


def test_first_run_executes_rerun_reuses(workspace: Workspace, small_pipeline: Path) -> None:
    first = run(workspace, small_pipeline)
    assert set(statuses(first).values()) == {"executed"}
    assert workspace.read_bytes(first.artifacts["summary"]) == b"sum=10"
    second = run(workspace, small_pipeline)
    assert set(statuses(second).values()) == {"cached"}
    assert second.artifacts == first.artifacts
    executed = workspace.audit_events(EventFilter(action="stage.run", outcome="ok"))
    assert len(executed) == 3


def test_an_edited_cache_row_hands_back_nothing_else(
    workspace: Workspace, small_pipeline: Path
) -> None:
    """The cache row maps a stage's outputs to artifacts; pointed at another (validly
    signed) artifact, it no longer matches the attestation, so the stage runs again."""
    first = run(workspace, small_pipeline, scale=1)
    other = run(workspace, small_pipeline, scale=2)
    assert first.artifacts["summary"] != other.artifacts["summary"]
    database = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with database:
        database.execute(
            "UPDATE stage_runs SET outputs = replace(outputs, ?, ?)",
            (first.artifacts["summary"], other.artifacts["summary"]),
        )
    database.close()
    again = run(workspace, small_pipeline, scale=1)
    assert statuses(again)["summarise"] == "executed"
    assert workspace.read_bytes(again.artifacts["summary"]) == b"sum=10"


def test_every_run_ends_once_in_the_ledger(workspace: Workspace, small_pipeline: Path) -> None:
    """An executed last stage records the run's end in its own commit; a run whose last
    stage was reused records it separately. Either way: one end per run, after its stages,
    and the run marked ok."""
    from sealml.db.models import RunRow

    first = run(workspace, small_pipeline)
    second = run(workspace, small_pipeline)
    ends = workspace.audit_events(EventFilter(action="run.end"))
    assert [e.fields()["resource"] for e in ends] == [
        f"run:{first.run_id}",
        f"run:{second.run_id}",
    ]
    assert {e.fields()["outcome"] for e in ends} == {"ok"}
    assert [e.fields()["details"]["stages"] for e in ends] == [3, 3]
    last_stage = workspace.audit_events(EventFilter(action="stage.run"))[-1]
    assert last_stage.seq < ends[0].seq
    with workspace.db.read() as session:
        rows = {row.id: row for row in session.query(RunRow)}
        assert rows[first.run_id].status == rows[second.run_id].status == "ok"
        assert rows[first.run_id].finished_at is not None


def test_changed_parameter_reruns_exactly_what_is_downstream(
    workspace: Workspace, small_pipeline: Path
) -> None:
    run(workspace, small_pipeline)
    assert statuses(run(workspace, small_pipeline, scale=2)) == {
        "parse": "cached",
        "total": "executed",
        "summarise": "executed",
    }
    assert statuses(run(workspace, small_pipeline, scale=2, label="total")) == {
        "parse": "cached",
        "total": "cached",
        "summarise": "executed",
    }
    (small_pipeline.parent / "numbers.txt").write_text("5 6\n")
    assert set(statuses(run(workspace, small_pipeline, scale=2)).values()) == {"executed"}


def blob_of(ws: Workspace, artifact_id: str) -> Path:
    with ws.db.read() as session:
        name = ws._find(session, artifact_id).blob_name
    assert isinstance(ws.blobs, LocalBlobStore)
    return ws.blobs.path_of(name)


def test_tampered_input_stops_the_run_before_the_consumer(
    workspace: Workspace, small_pipeline: Path, tmp_path: Path
) -> None:
    first = run(workspace, small_pipeline)
    blob = blob_of(workspace, first.artifacts["numbers"])
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x01
    blob.write_bytes(bytes(data))
    for marker in (tmp_path / "markers").iterdir():
        marker.unlink()
    with pytest.raises(IntegrityError):
        run(workspace, small_pipeline, scale=3)
    assert not (tmp_path / "markers" / "total").exists(), "the consumer ran on tampered input"
    failed = workspace.audit_events(EventFilter(action="run.end", outcome="failed"))
    assert len(failed) == 1


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('raise ValueError("no good")', "stage 'total' failed: ValueError: no good"),
        ("raise SystemExit(3)", r"stage 'total' failed: it called sys\.exit\(3\)"),
    ],
    ids=["raises", "exits"],
)
def test_failed_stage_leaves_no_outputs(
    workspace: Workspace, small_pipeline: Path, statement: str, message: str
) -> None:
    source = small_pipeline.read_text().replace(
        'return {"total": {"sum"', statement + '\n    return {"total": {"sum"'
    )
    small_pipeline.write_text(source)
    before = {i.name for i in workspace.ls()}
    with pytest.raises(StageFailedError, match=message):
        run(workspace, small_pipeline)
    after = {i.name for i in workspace.ls()}
    assert after - before == {"numbers/raw", "numbers/numbers", "numbers/parse.intoto.jsonl"}
    report = workspace.verify_store()
    assert report.ok and report.orphan_blobs == 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", "syntax error"),
        ("raise RuntimeError('boom')\n", "loading failed: RuntimeError: boom"),
        ("x = 1\n", "defines no"),
        ("import sys\nsys.exit(3)\n", r"calls sys\.exit\(3\)"),  # used to end sealml with 3
        ("x = 1\0\n", "syntax error: source code string cannot contain null bytes"),
    ],
)
def test_bad_pipeline_files(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(UsageError, match=message):
        load_pipeline(path)


def test_running_needs_permission(workspace: Workspace, small_pipeline: Path) -> None:
    workspace.add_user("audrey", ["auditor"], password=Secret("audrey-password"))
    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    workspace.close()
    auditor = reopen(workspace.root, "audrey", "audrey-password")
    with pytest.raises(PermissionDeniedError, match="pipeline:run"):
        run(auditor, small_pipeline)
    scientist = reopen(workspace.root, "dana", "dana-password")
    assert set(statuses(run(scientist, small_pipeline)).values()) == {"executed"}


def test_isolated_stage_is_refused_without_a_sandbox(
    workspace: Workspace, small_pipeline: Path
) -> None:
    small_pipeline.write_text(
        small_pipeline.read_text().replace(
            '@stage(inputs={"raw": "file"}, outputs={"numbers": "report"})',
            '@stage(inputs={"raw": "file"}, outputs={"numbers": "report"}, isolated=True)',
        )
    )
    with pytest.raises(UsageError, match="must run isolated"):
        run(workspace, small_pipeline, SandboxExecutor(bwrap=""))


# -- provenance -------------------------------------------------------------------------


def attestation_of(ws: Workspace, artifact_id: str) -> tuple[str, dict[str, Any]]:
    with ws.db.read() as session:
        link = session.get(AttestationRow, artifact_id)
        assert link is not None
        attestation = link.attestation_id
    return attestation, json.loads(ws.read_bytes(attestation))


def plant(ws: Workspace, subject: str, envelope: dict[str, Any]) -> None:
    """Store a forged envelope as an attestation and point the subject at it."""
    forged = ws.put(io.BytesIO(canonical_json(envelope)), "attestation", "forged")
    connection = sqlite3.connect(ws.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute(
            "UPDATE attestations SET attestation_id = ? WHERE subject_id = ?", (forged.id, subject)
        )
    connection.close()


def edit_payload(envelope: dict[str, Any], change: Any) -> dict[str, Any]:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement)
    return {**envelope, "payload": base64.b64encode(canonical_json(statement)).decode()}


def resign(ws: Workspace, envelope: dict[str, Any]) -> dict[str, Any]:
    assert ws.actor is not None
    key = ws.actor.signing_key
    return sign_envelope(
        PAYLOAD_TYPE, base64.b64decode(envelope["payload"]), key, key.public_key.fingerprint()
    )


def set_subject_digest(statement: dict[str, Any]) -> None:
    statement["subject"][0]["digest"]["sha256"] = "0" * 64


def set_input_digest(statement: dict[str, Any]) -> None:
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["blake3"] = (
        "f" * 64
    )


def set_parameter(statement: dict[str, Any]) -> None:
    statement["predicate"]["buildDefinition"]["externalParameters"]["parameters"]["scale"] = 99


def test_provenance_verifies_back_to_the_source(workspace: Workspace, small_pipeline: Path) -> None:
    report = run(workspace, small_pipeline)
    steps = workspace.verify_provenance(report.artifacts["summary"])
    assert [(s.artifact.name, s.status) for s in steps] == [
        ("numbers/summary", "attested"),
        ("numbers/total", "attested"),
        ("numbers/numbers", "attested"),
        ("numbers/raw", "source"),
    ]


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda ws, e: edit_payload(e, set_subject_digest), "no signature"),
        (lambda ws, e: edit_payload(e, set_parameter), "no signature"),
        (lambda ws, e: resign(ws, edit_payload(e, set_subject_digest)), "subject digest differs"),
        (
            lambda ws, e: resign(ws, edit_payload(e, set_input_digest)),
            "differs from what was consumed",
        ),
    ],
    ids=["edited-subject", "edited-predicate", "resigned-subject", "resigned-input"],
)
def test_forged_envelopes_fail_verification(
    workspace: Workspace, small_pipeline: Path, forge: Any, message: str
) -> None:
    report = run(workspace, small_pipeline)
    subject = report.artifacts["total"]
    _, envelope = attestation_of(workspace, subject)
    plant(workspace, subject, forge(workspace, envelope))
    with pytest.raises(IntegrityError, match=message):
        workspace.verify_provenance(report.artifacts["summary"])


def test_envelope_signed_by_another_principal_fails(
    workspace: Workspace, small_pipeline: Path
) -> None:
    report = run(workspace, small_pipeline)
    subject = report.artifacts["total"]
    _, envelope = attestation_of(workspace, subject)
    workspace.add_user("mallory", ["data-scientist"], password=Secret("mallory-password"))
    mallory = reopen(workspace.root, "mallory", "mallory-password")
    plant(mallory, subject, resign(mallory, envelope))
    with pytest.raises(IntegrityError, match="attested by 'mallory' but sealed by 'admin'"):
        workspace.verify_provenance(report.artifacts["summary"])


def test_envelope_verifies_with_securesystemslib(
    workspace: Workspace, small_pipeline: Path
) -> None:
    pytest.importorskip("securesystemslib", reason="in the test extra; CI installs it")
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    report = run(workspace, small_pipeline)
    _, envelope = attestation_of(workspace, report.artifacts["total"])
    assert workspace.actor is not None
    public = workspace.actor.principal.public_key
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = SSlibKey.from_crypto(
        load_pem_public_key(public.pem().encode()),
        keyid=public.fingerprint(),
        scheme="ecdsa-sha2-nistp256",
    )
    tampered = edit_payload(copy.deepcopy(envelope), set_parameter)
    verified = Envelope.from_dict(copy.deepcopy(envelope)).verify([key], 1)
    assert public.fingerprint() in verified
    with pytest.raises(Exception, match="Found: 0"):
        Envelope.from_dict(tampered).verify([key], 1)
