"""The model registry: gates, two-person approval with TOTP, rollback, revocation, tamper."""

from __future__ import annotations

import io
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.access import totp
from sealml.errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from sealml.ledger import EventFilter
from sealml.models.formats import dump_skops
from sealml.pipeline.loader import load_pipeline

from ..conftest import reopen

MODEL_PIPELINE = """
from pathlib import Path
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"csv": "file"}, outputs={"raw": "dataset"})
def ingest(csv):
    import io
    return {"raw": pd.read_csv(io.BytesIO(csv))}


@stage(inputs={"raw": "dataset"}, outputs={"rows": "dataset", "held": "dataset"})
def split(raw):
    return {"rows": raw.iloc[::2], "held": raw.iloc[1::2]}


@stage(inputs={"rows": "dataset"}, outputs={"model": "model"})
def train(rows, trees=5):
    model = RandomForestClassifier(n_estimators=int(trees), random_state=0)
    model.fit(rows[["a", "b"]], rows["y"])
    return {"model": model}


@stage(inputs={"model": "model", "held": "dataset"}, outputs={"metrics": "report"})
def evaluate(model, held):
    accuracy = float((model.predict(held[["a", "b"]]) == held["y"]).mean())
    return {"metrics": {"accuracy": accuracy}}


pipeline = Pipeline(
    "tiny",
    stages=[ingest, split, train, evaluate],
    sources={"csv": Source(Path("tiny.csv"))},
)
"""

SCIENTIST_PASSWORD = "scientist-password-1"
ENGINEER_PASSWORD = "engineer-password-1"


@pytest.fixture
def model_pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}" for i in range(60)]
    (folder / "tiny.csv").write_text("\n".join(rows) + "\n")
    path = folder / "tiny_pipeline.py"
    path.write_text(textwrap.dedent(MODEL_PIPELINE))
    return path


@pytest.fixture
def team(workspace: Workspace, ws_path: Path) -> Path:
    """A scientist who trains and an engineer who approves and promotes."""
    workspace.add_user(
        "sam", ["data-scientist", "data-steward"], password=Secret(SCIENTIST_PASSWORD)
    )
    workspace.add_user("erin", ["ml-engineer"], password=Secret(ENGINEER_PASSWORD))
    return ws_path


def train(path: Path, pipeline: Path, trees: int = 5) -> dict[str, str]:
    with reopen(path, "sam", SCIENTIST_PASSWORD) as sam:
        report = sam.run_pipeline(load_pipeline(pipeline), "local", {"trees": trees})
        return dict(report.artifacts)


def register(path: Path, pipeline: Path, trees: int = 5) -> int:
    artifacts = train(path, pipeline, trees)
    with reopen(path, "sam", SCIENTIST_PASSWORD) as sam:
        return sam.register_model(artifacts["model"], "credit").version


def outcomes(ws: Workspace, action: str, outcome: str) -> list[dict[str, Any]]:
    return [e for e in ws.history("credit") if e["action"] == action and e["outcome"] == outcome]


class Clock:
    """The time TOTP codes are made and checked at, stepped forward by each use (two
    approvals in one real 30-second step would otherwise be a replay)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def code(self, secret: str) -> str:
        self.now += totp.PERIOD
        return totp.current_code(secret, self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(totp, "time", fake)
    return fake


@pytest.fixture
def erin_secret(team: Path) -> str:
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        return erin.totp_enroll().secret


def approve_and_promote(
    path: Path, version: int, secret: str, clock: Clock, alias: str = "production"
) -> None:
    with reopen(path, "erin", ENGINEER_PASSWORD) as erin:
        erin.approve_model("credit", version, alias, clock.code(secret))
        erin.promote_model("credit", version, alias)


def two_in_production(path: Path, pipeline: Path, secret: str, clock: Clock) -> tuple[int, int]:
    """Version 1 (5 trees) promoted to production, then version 2 (6 trees) over it."""
    first = register(path, pipeline)
    approve_and_promote(path, first, secret, clock)
    second = register(path, pipeline, trees=6)
    approve_and_promote(path, second, secret, clock)
    return first, second


def test_register_signs_scans_and_binds_provenance(team: Path, model_pipeline: Path) -> None:
    artifacts = train(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        version = sam.register_model(artifacts["model"], "credit")
        assert version.version == 1
        assert version.trained_by == "sam"
        assert version.provenance_id is not None
        assert version.evaluation_id == artifacts["metrics"]
        assert sam.info(version.signature_id).annotations["signature"] == "openssf-model-signing"
        scan = sam.info(version.scan_id)
        assert scan.annotations == {"report": "model-scan", "verdict": "safe"}
        card = sam.ls(kind="report", name="credit-v1-card.md")
        assert len(card) == 1 and card[0].parents == (version.artifact_id,)
        text = sam.read_bytes(card[0].id).decode()
        assert text.startswith("# Model card: credit v1") and "## Provenance chain" in text
        assert sam.info(card[0].id).annotations["report"] == "model-card"
        assert sam.register_model(artifacts["model"], "credit").version == 2
        events = sam.history("credit")
        assert [e["action"] for e in events] == ["model.register", "model.register"]


def test_a_version_verifies_after_its_registrant_rotated_their_key(
    team: Path, model_pipeline: Path
) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        old = sam.require_actor().principal.public_key.fingerprint()
        before, after, _ = sam.rotate_signing_key(password=Secret(SCIENTIST_PASSWORD))
        assert before.public_key.fingerprint() == old != after.public_key.fingerprint()
        second = sam.register_model(train(team, model_pipeline, 6)["model"], "credit").version
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        # the statement, OpenSSF signature and provenance of v1 were signed with the old key
        shown = erin.show_model("credit", version)
        assert shown.version == version and shown.trained_by == "sam"
        assert erin.show_model("credit", second).version == second
        assert erin.gate_report("credit", version, "staging") is not None


def test_a_version_registered_after_its_registrants_key_leaked_is_refused(
    team: Path, model_pipeline: Path
) -> None:
    from sealml.clock import utc_now

    leaked_at = utc_now()
    version = register(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        sam.rotate_signing_key(password=Secret(SCIENTIST_PASSWORD), compromised_since=leaked_at)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        with pytest.raises(IntegrityError, match="compromised since"):
            erin.show_model("credit", version)
        with pytest.raises(IntegrityError, match="compromised since"):
            erin.promote_model("credit", version, "staging")


def test_promotion_without_passing_gates_fails(team: Path, erin_secret: str, clock: Clock) -> None:
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit([[0], [1]], [0, 1])
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        info = sam.put(
            io.BytesIO(dump_skops(model)),
            "model",
            "bare.skops",
            media_type="application/vnd.skops+zip",
        )
        version = sam.register_model(info.id, "credit").version
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        erin.approve_model("credit", version, "production", clock.code(erin_secret))
        with pytest.raises(PermissionDeniedError) as caught:
            erin.promote_model("credit", version, "production")
        assert "no verified provenance" in str(caught.value)
        assert "no evaluation report" in str(caught.value)
        denied = outcomes(erin, "model.promote", "denied")
        assert len(denied) == 1
        assert erin.show_model("credit", version).aliases == ()
        # staging has no gate and no two-person rule
        assert erin.promote_model("credit", version, "staging").aliases == ("staging",)


def test_metric_gate_thresholds_are_enforced(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    version = register(team, model_pipeline)
    with reopen(team) as admin:
        admin.config.registry.gates["production"].min_metrics = {"accuracy": 1.01}
        admin.approve_policy()
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        erin.approve_model("credit", version, "production", clock.code(erin_secret))
        with pytest.raises(PermissionDeniedError, match=r"accuracy = .* is below 1.01"):
            erin.promote_model("credit", version, "production")


def _evaluated_on_training_rows(pipeline: Path) -> None:
    """The tiny pipeline, changed to evaluate the model on the rows it was trained on."""
    text = pipeline.read_text()
    text = text.replace('inputs={"model": "model", "held": "dataset"}',
                        'inputs={"model": "model", "rows": "dataset"}')  # fmt: skip
    text = text.replace("def evaluate(model, held):", "def evaluate(model, rows):\n    held = rows")
    pipeline.write_text(text)


def test_an_evaluation_on_training_data_cannot_open_the_production_gate(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    _evaluated_on_training_rows(model_pipeline)
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        checks = {c.check: c for c in erin.gate_report("credit", version, "production")}
        held_out = checks["held-out test data"]
        assert not held_out.passed and held_out.measured == "used in training"
        assert "among the model's own inputs" in held_out.reason
        erin.approve_model("credit", version, "production", clock.code(erin_secret))
        with pytest.raises(PermissionDeniedError, match="among the model's own inputs"):
            erin.promote_model("credit", version, "production")
    with reopen(team) as admin:  # an explicit, approved decision turns the check off
        admin.config.registry.gates["production"].require_held_out_test = False
        admin.approve_policy()
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        checks = {c.check: c for c in erin.gate_report("credit", version, "production")}
        assert "held-out test data" not in checks
        assert erin.promote_model("credit", version, "production").aliases == ("production",)


def test_a_held_out_evaluation_passes_and_another_models_report_does_not(
    team: Path, model_pipeline: Path
) -> None:
    version = register(team, model_pipeline)
    other = train(team, model_pipeline, trees=7)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        borrowed = sam.register_model(
            train(team, model_pipeline, trees=9)["model"], "credit", evaluation=other["metrics"]
        ).version
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        good = {c.check: c for c in erin.gate_report("credit", version, "production")}
        assert (
            good["held-out test data"].passed and good["held-out test data"].measured == "held out"
        )
        bad = {c.check: c for c in erin.gate_report("credit", borrowed, "production")}
        assert bad["held-out test data"].measured == "another model"
        assert not bad["held-out test data"].passed


def test_self_approval_fails_under_the_two_person_rule(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        secret = sam.totp_enroll().secret
        with pytest.raises(PermissionDeniedError, match="another principal must approve"):
            sam.approve_model("credit", version, "production", clock.code(secret))
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(PermissionDeniedError, match="no unused approval"),
    ):
        erin.promote_model("credit", version, "production")


def test_wrong_and_replayed_totp_codes_fail(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        code = clock.code(erin_secret)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        with pytest.raises(AuthenticationError, match="wrong or has expired"):
            erin.approve_model("credit", version, "production", wrong)
        with pytest.raises(AuthenticationError, match="wrong or has expired"):
            erin.approve_model("credit", version, "production", "12345x")
        stale = totp.current_code(erin_secret, clock.now - 10 * totp.PERIOD)
        with pytest.raises(AuthenticationError, match="wrong or has expired"):
            erin.approve_model("credit", version, "production", stale)
        erin.approve_model("credit", version, "production", code)
        with pytest.raises(AuthenticationError, match="already used"):
            erin.approve_model("credit", version, "production", code)
        earlier = totp.current_code(erin_secret, clock.now - totp.PERIOD)
        with pytest.raises(AuthenticationError, match="already used"):
            erin.approve_model("credit", version, "production", earlier)
        denied = outcomes(erin, "model.approve", "denied")
        assert len(denied) == 5
        approved = outcomes(erin, "model.approve", "ok")
        assert len(approved) == 1


def test_re_enrolment_needs_a_current_code(team: Path, erin_secret: str, clock: Clock) -> None:
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        with pytest.raises(UsageError, match="give a current code"):
            erin.totp_enroll()
        code = clock.code(erin_secret)
        with pytest.raises(AuthenticationError):
            erin.totp_enroll("000000" if code != "000000" else "111111")
        enrolment = erin.totp_enroll(code)
        assert enrolment.secret != erin_secret
        assert enrolment.secret not in repr(enrolment)
        assert enrolment.uri.startswith("otpauth://totp/")


def test_promotion_consumes_the_approval(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    first = register(team, model_pipeline)
    approve_and_promote(team, first, erin_secret, clock)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        assert erin.show_model("credit", "production").version == first
        with pytest.raises(UsageError, match="already points"):
            erin.promote_model("credit", first, "production")
    second = register(team, model_pipeline, trees=6)
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(PermissionDeniedError, match="no unused approval"),
    ):
        erin.promote_model("credit", second, "production")


def test_approvals_written_into_the_database_approve_nothing(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    """Approvals are the ledger's: a row inserted into the approvals table (no TOTP, no
    second person) or a used one marked unused again lets no promotion through."""
    first = register(team, model_pipeline)
    approve_and_promote(team, first, erin_secret, clock)
    second = register(team, model_pipeline, trees=6)
    database = sqlite3.connect(team / ".sealml" / "sealml.db")
    with database:
        database.execute("UPDATE model_approvals SET used_at = NULL")  # reuse the first one
        database.execute(
            "INSERT INTO model_approvals (id, name, version, alias, approver, approved_at, "
            "ledger_seq) VALUES ('f0f0', 'credit', ?, 'production', 'erin', '2026-01-01', 1)",
            (second,),
        )
    database.close()
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        checks = {c.check: c for c in erin.gate_report("credit", second, "production")}
        assert not checks["approval"].passed
        with pytest.raises(PermissionDeniedError, match="no unused approval"):
            erin.promote_model("credit", second, "production")
        erin.approve_model("credit", second, "production", clock.code(erin_secret))
        assert erin.promote_model("credit", second, "production").version == second


def test_rollback_restores_the_previous_version(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    first, second = two_in_production(team, model_pipeline, erin_secret, clock)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        described, model = erin.resolve_model("credit", "production")
        assert (described.version, model.n_estimators) == (second, 6)
        rolled = erin.rollback_model("credit", "production")
        assert rolled.version == first
        described, model = erin.resolve_model("credit", "production")
        assert (described.version, model.n_estimators) == (first, 5)
        with pytest.raises(UsageError, match="no previous version"):
            erin.rollback_model("credit", "production")
        actions = [e["action"] for e in erin.history("credit")]
        assert actions.count("model.rollback") == 1


def test_revoked_version_cannot_be_served_or_promoted(
    team: Path, model_pipeline: Path, erin_secret: str, clock: Clock
) -> None:
    first, second = two_in_production(team, model_pipeline, erin_secret, clock)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        erin.set_model_status("credit", first, "revoked", "trained on leaked data")
        with pytest.raises(PermissionDeniedError, match="revoked and can never be served"):
            erin.resolve_model("credit", first)
        with pytest.raises(PermissionDeniedError, match="the version is revoked"):
            erin.promote_model("credit", first, "staging")
        with pytest.raises(UsageError, match="it is revoked"):
            erin.rollback_model("credit", "production")
        with pytest.raises(UsageError, match="already revoked"):
            erin.set_model_status("credit", first, "deprecated", "again")
        erin.set_model_status("credit", second, "revoked", "incident 7")
        with pytest.raises(PermissionDeniedError, match="can never be served"):
            erin.resolve_model("credit", "production")
        loads = outcomes(erin, "model.load", "denied")
        assert len(loads) == 2


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / ".sealml" / "sealml.db")


def test_un_revoking_in_the_database_is_caught(team: Path, model_pipeline: Path) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        erin.set_model_status("credit", version, "revoked", "compromised")
    with _db(team) as db:
        db.execute("UPDATE model_versions SET status = 'active'")
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(IntegrityError, match="differs from the ledger"),
    ):
        erin.resolve_model("credit", version)


def test_swapped_model_artifact_is_refused(team: Path, model_pipeline: Path) -> None:
    first = register(team, model_pipeline)
    second = register(team, model_pipeline, trees=6)
    with _db(team) as db:
        other = db.execute(
            "SELECT artifact_id FROM model_versions WHERE version = ?", (second,)
        ).fetchone()[0]
        db.execute("UPDATE model_versions SET artifact_id = ? WHERE version = ?", (other, first))
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(IntegrityError, match="record differs from statement"),
    ):
        erin.resolve_model("credit", first)


def test_tampered_model_blob_is_never_loaded(team: Path, model_pipeline: Path) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        artifact = erin.show_model("credit", version).artifact_id
        with erin.db.read() as session:
            blob = erin.blobs.path_of(erin._find(session, artifact).blob_name)  # type: ignore[attr-defined]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(IntegrityError),
    ):
        erin.resolve_model("credit", version)


def test_an_open_workspace_verifies_afresh_in_each_operation(
    team: Path, model_pipeline: Path
) -> None:
    """One operation verifies each artifact once; the next one verifies again, so a
    dataset on the model's chain changed on disk between two calls on the same open
    workspace is found."""
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        assert erin.model_card("credit", version).chain
        checks = {c.check: c for c in erin.gate_report("credit", version, "production")}
        assert checks["signature, scan, provenance"].passed
        model = erin.show_model("credit", version).artifact_id
        dataset = next(
            s.artifact.id for s in erin.verify_provenance(model) if s.artifact.kind == "dataset"
        )
        with erin.db.read() as session:
            blob = erin.blobs.path_of(erin._find(session, dataset).blob_name)  # type: ignore[attr-defined]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        checks = {c.check: c for c in erin.gate_report("credit", version, "production")}
        assert not checks["signature, scan, provenance"].passed
        with pytest.raises(IntegrityError):
            erin.model_card("credit", version)
        with pytest.raises(IntegrityError):
            erin.verify_provenance(model)


def test_registering_an_unsafe_pickle_is_refused(team: Path) -> None:
    from .corpus import malicious

    name, payload = next(iter(malicious().items()))
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        info = sam.put(io.BytesIO(payload), "model", name)
        with pytest.raises(IntegrityError, match="only clean models"):
            sam.register_model(info.id, "credit")
        with pytest.raises(NotFoundError):
            sam.show_model("credit", 1)


def test_registry_permissions(team: Path, model_pipeline: Path) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        with pytest.raises(PermissionDeniedError, match="registry:promote"):
            sam.promote_model("credit", version, "staging")
        with pytest.raises(PermissionDeniedError, match="registry:revoke"):
            sam.set_model_status("credit", version, "revoked", "x")


def test_bad_names_and_aliases(team: Path, model_pipeline: Path) -> None:
    version = register(team, model_pipeline)
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        for name in ("../etc", "", "A" * 200, "Credit"):
            with pytest.raises(UsageError):
                erin.versions(name)
        for alias in ("../x", "1", "x" * 70):
            with pytest.raises(UsageError):
                erin.promote_model("credit", version, alias)


def test_import_refuses_unsafe_and_records_source(team: Path, tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    from .corpus import malicious

    _, payload = next(iter(malicious().items()))
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(payload)
    good = tmp_path / "tree.skops"
    good.write_bytes(dump_skops(DecisionTreeClassifier().fit([[0], [1]], [0, 1])))
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        with pytest.raises(IntegrityError, match="not imported"):
            sam.import_model(bad, "https://hub.example/evil")
        assert sam.ls(kind="model") == []
        artifact = sam.import_model(good, "https://hub.example/tree")
        info = sam.info(artifact)
        assert info.annotations["source"] == "https://hub.example/tree"
        assert info.media_type == "application/vnd.skops+zip"
        onnx = tmp_path / "m.onnx"
        onnx.write_bytes(b"x")
        with pytest.raises(UsageError, match="not an ONNX model"):
            sam.import_model(onnx, "https://hub.example/m")
        with pytest.raises(UsageError, match="unsupported model format"):
            sam.import_model(onnx.rename(tmp_path / "m.h5"), "https://hub.example/m")
        with pytest.raises(UsageError, match="--source"):
            sam.import_model(good, "\n")
    with reopen(team) as admin:
        denied = admin.audit_events(EventFilter(action="model.import", outcome="denied"))
        assert denied[0].fields()["details"]["source"] == "https://hub.example/evil"
