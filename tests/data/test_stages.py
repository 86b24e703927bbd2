"""Built-in stages in a real pipeline: pinned remote sources, minimisation, validation with
quarantine, screening with a gate."""

from __future__ import annotations

import hashlib
import json
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tomli_w

from sealml import Workspace
from sealml.errors import IntegrityError, UsageError
from sealml.ledger import EventFilter
from sealml.pipeline.loader import load_pipeline
from sealml.workspace.runs import QuarantineError

from .test_sources import tls_server  # noqa: F401 - the fixture

GERMAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "german_credit.csv"

PIPELINE = """
from sealml.data import stages
from sealml.pipeline import Pipeline, Source

COLUMNS = ["age", "credit_amount", "duration_months", "purpose", "credit_risk"]
SCHEMA = {{
    "columns": {{
        "age": {{"dtype": "int", "min": 18, "max": 100}},
        "credit_amount": {{"dtype": "int", "min": 0}},
        "duration_months": {{"dtype": "int", "min": 1}},
        "purpose": {{"dtype": "str"}},
        "credit_risk": {{"dtype": "int", "allowed": [1, 2]}},
    }},
}}

pipeline = Pipeline(
    "credit",
    stages=[
        stages.ingest("raw", "applications", columns=COLUMNS),
        stages.validate("applications", "checked", schema=SCHEMA),
        stages.screen("checked", "training", label="credit_risk", max_flagged_share={gate}),
    ],
    sources={{"raw": Source({location!r}, sha256={pin!r})}},
)
"""


def write(folder: Path, location: str, pin: str | None = None, gate: float = 0.5) -> Path:
    path = folder / "credit_pipeline.py"
    path.write_text(textwrap.dedent(PIPELINE.format(location=location, pin=pin, gate=gate)))
    return path


def test_local_source_minimised_validated_screened(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "applications.csv"
    data.write_bytes(GERMAN.read_bytes())
    report = workspace.run_pipeline(load_pipeline(write(tmp_path, str(data))), "local")
    ingest = workspace.read_bytes(report.artifacts["applications_ingest"])
    assert b'"dropped"' in ingest and b"checking_status" in ingest
    source = workspace.info("credit/raw")
    with workspace.db.read() as session:
        statement = workspace._find(session, source.id).statement
    assert hashlib.sha256(GERMAN.read_bytes()).hexdigest().encode() in statement
    training = workspace.read_table(report.artifacts["training"])
    assert list(training.columns) == [
        "age",
        "credit_amount",
        "duration_months",
        "purpose",
        "credit_risk",
    ]
    assert [
        s["artifact"]["name"] if isinstance(s, dict) else s.artifact.name
        for s in workspace.verify_provenance(report.artifacts["training"])
    ][-1] == "credit/raw"


def test_invalid_data_is_quarantined_and_stops_the_run(
    workspace: Workspace, tmp_path: Path
) -> None:
    frame = pd.read_csv(GERMAN)
    frame.loc[[4, 8], "age"] = [7, 130]
    data = tmp_path / "applications.csv"
    frame.to_csv(data, index=False)
    loaded = load_pipeline(write(tmp_path, str(data)))
    with pytest.raises(QuarantineError, match="quarantined its outputs") as caught:
        workspace.run_pipeline(loaded, "local")
    assert caught.value.exit_code == 1
    names = {i.name for i in workspace.ls()}
    assert "credit/checked_validation" in names and "credit/training" not in names
    report = json.loads(workspace.read_bytes("credit/checked_validation"))
    assert sorted(r for v in report["violations"] for r in v["rows"]) == [4, 8]
    with workspace.db.read() as session:
        flagged = workspace._find(session, "credit/checked").statement
    assert b'"quarantined"' in flagged
    with pytest.raises(QuarantineError):
        workspace.run_pipeline(loaded, "local")  # never reused from the cache
    events = workspace.audit_events(EventFilter(action="stage.quarantined"))
    assert len(events) == 2


def test_screening_gate_stops_the_run(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "applications.csv"
    data.write_bytes(GERMAN.read_bytes())
    with pytest.raises(QuarantineError, match="screening flagged"):
        workspace.run_pipeline(load_pipeline(write(tmp_path, str(data), gate=0.001)), "local")
    assert "credit/training_screening" in {i.name for i in workspace.ls()}


def test_pinned_https_source(workspace: Workspace, tmp_path: Path, tls_server: Any) -> None:  # noqa: F811
    url, cert, root = tls_server
    (root / "data.csv").write_bytes(GERMAN.read_bytes())
    pin = hashlib.sha256(GERMAN.read_bytes()).hexdigest()
    path = write(tmp_path, url, pin)
    with pytest.raises(UsageError, match="allowed_sources"):
        workspace.run_pipeline(load_pipeline(path), "local")
    config = workspace.root / "sealml.toml"
    settings = tomllib.loads(config.read_text())
    settings["data"].update(allowed_sources=["https://localhost:*"], ca_bundle=str(cert))
    config.write_text(tomli_w.dumps(settings))
    fresh = Workspace.open(workspace.root, passphrase=workspace._passphrase)  # type: ignore[arg-type]
    fresh.actor = workspace.actor
    report = fresh.run_pipeline(load_pipeline(path), "local")
    assert "training" in report.artifacts
    (root / "data.csv").write_bytes(GERMAN.read_bytes() + b"\n")
    with pytest.raises(IntegrityError, match="changed: pinned sha256"):
        fresh.run_pipeline(load_pipeline(path), "local")


PROTECT = """
from pathlib import Path
from sealml.data import stages
from sealml.pipeline import Pipeline, Source

pipeline = Pipeline(
    "people",
    stages=[
        stages.ingest("raw", "people"),
        stages.protect("people", "safe", actions={
            "email": "pseudonym", "ssn": "tokenise", "age": {"action": "generalise", "band": 10},
        }),
    ],
    sources={"raw": Source(Path("people.csv"))},
)
"""


@pytest.fixture
def people_pipeline(tmp_path: Path) -> Path:
    pd.DataFrame(
        {
            "email": [f"user{i}@example.org" for i in range(40)],
            "ssn": [f"{100 + i:03d}-45-{1000 + i}" for i in range(40)],
            "age": [20 + i for i in range(40)],
        }
    ).to_csv(tmp_path / "people.csv", index=False)
    path = tmp_path / "people_pipeline.py"
    path.write_text(PROTECT)
    return path


def test_protect_stage_seals_a_vault_only_pii_reveal_opens(
    workspace: Workspace, people_pipeline: Path
) -> None:
    from sealml import Secret
    from sealml.errors import PermissionDeniedError

    from ..conftest import reopen

    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    workspace.add_user("stella", ["data-steward"], password=Secret("stella-password"))
    workspace.close()
    steward = reopen(workspace.root, "stella", "stella-password")
    report = steward.run_pipeline(load_pipeline(people_pipeline), "local")
    dana = reopen(workspace.root, "dana", "dana-password")
    safe = dana.read_table(report.artifacts["safe"])
    assert safe["email"].str.startswith("pn_").all() and safe["ssn"].str.startswith("tk_").all()
    assert safe["age"].iloc[0] == "20-29"
    vault = report.artifacts["safe_vault"]
    with pytest.raises(PermissionDeniedError, match="vault:read"):
        dana.read_bytes(vault)
    with pytest.raises(PermissionDeniedError, match="pii:reveal"):
        dana.reveal([safe["ssn"].iloc[0]], vault)
    revealed = steward.reveal([safe["ssn"].iloc[0], "tk_unknown"], vault)
    assert revealed == {safe["ssn"].iloc[0]: "100-45-1000", "tk_unknown": None}
    provenance = json.loads(steward.read_bytes(report.artifacts["safe_pii"]))
    assert provenance["actions"] == {"email": "pseudonym", "ssn": "tokenise", "age": "generalise"}


@pytest.mark.skipif(__import__("shutil").which("bwrap") is None, reason="bubblewrap not installed")
def test_protect_stage_gives_the_same_bytes_in_the_sandbox(
    workspace: Workspace, people_pipeline: Path
) -> None:
    local = workspace.run_pipeline(load_pipeline(people_pipeline), "local", {})
    digests = {n: workspace.info(i).digest for n, i in local.artifacts.items()}
    with workspace.db.write() as session:
        from sqlalchemy import delete

        from sealml.db.models import StageRunRow

        session.execute(delete(StageRunRow))  # forget the cache: execute again
    boxed = workspace.run_pipeline(load_pipeline(people_pipeline), "sandbox", {})
    assert {s.status for s in boxed.stages} == {"executed"}
    assert {n: workspace.info(i).digest for n, i in boxed.artifacts.items()} == digests
