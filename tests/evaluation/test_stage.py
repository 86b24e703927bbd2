"""The built-in evaluate stage in a real pipeline, read by the registry's gates."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

from sealml import Workspace
from sealml.config import GateSection
from sealml.pipeline.loader import load_pipeline

from ..conftest import DATA

PIPELINE = """
import io
from pathlib import Path
from typing import Any
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sealml.evaluation import stages
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"csv": "file"}, outputs={"train": "dataset", "test": "dataset"})
def split(csv):
    frame = pd.read_csv(io.BytesIO(csv))
    categorical = frame.select_dtypes(exclude="number").columns.drop("personal_status_sex")
    frame = pd.get_dummies(frame, columns=list(categorical))
    train, test = train_test_split(frame, test_size=0.5, random_state=0)
    return {"train": train, "test": test}


@stage(inputs={"train": "dataset"}, outputs={"model": "model"})
def train(train):
    features = train.drop(columns=["credit_risk", "personal_status_sex"])
    model = RandomForestClassifier(n_estimators=40, random_state=0)
    return {"model": model.fit(features, train["credit_risk"])}


pipeline = Pipeline(
    "credit",
    stages=[
        split,
        train,
        stages.evaluate(
            "model", "test", "evaluation", label="credit_risk",
            sensitive=["personal_status_sex"], members="train", budgets=[0.1, 1.0],
            robustness_rows=100,
        ),
    ],
    sources={"csv": Source(Path("german_credit.csv"))},
)
"""


def test_evaluation_report_feeds_the_gate(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "credit"
    folder.mkdir()
    shutil.copy(DATA / "german_credit.csv", folder / "german_credit.csv")
    source = textwrap.dedent(PIPELINE)
    (folder / "credit_pipeline.py").write_text(source)
    report = workspace.run_pipeline(load_pipeline(folder / "credit_pipeline.py"))
    evaluation = workspace.read_bytes(report.artifacts["evaluation"])
    assert b"fairness.demographic_parity_difference" in evaluation
    assert b"privacy.membership_auc" in evaluation
    assert b"robustness.accuracy@0.1" in evaluation and b"robustness.accuracy@1" in evaluation
    version = workspace.register_model(report.artifacts["model"], "credit")
    assert version.evaluation_id == report.artifacts["evaluation"]
    workspace.config.registry.gates["production"].max_metrics = {
        "privacy.membership_auc": 0.6,
        "fairness.demographic_parity_difference": 0.5,
    }
    workspace.config.registry.two_person_aliases = []
    workspace.approve_policy()
    checks = {c.check: c for c in workspace.gate_report("credit", version.version, "production")}
    assert not checks["privacy.membership_auc"].passed
    assert float(checks["privacy.membership_auc"].measured) > 0.6
    assert checks["fairness.demographic_parity_difference"].passed
    assert checks["provenance"].passed and checks["evaluation"].passed
    assert checks["held-out test data"].passed
    body = json.loads(evaluation)
    assert body["data"] == {"test": "test", "members": "train"}
    assert body["metrics"]["leakage.test_rows_in_train"] == 0.0  # a clean split
    card = workspace.model_card("credit", version.version)
    assert not any("also occur in the training rows" in item for item in card.limitations)


def test_the_gate_refuses_an_evaluation_on_the_training_set(
    workspace: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "credit"
    folder.mkdir()
    shutil.copy(DATA / "german_credit.csv", folder / "german_credit.csv")
    source = textwrap.dedent(PIPELINE).replace('"model", "test", "evaluation"',
                                               '"model", "train", "evaluation"')  # fmt: skip
    (folder / "credit_pipeline.py").write_text(source)
    report = workspace.run_pipeline(load_pipeline(folder / "credit_pipeline.py"))
    body = json.loads(workspace.read_bytes(report.artifacts["evaluation"]))
    assert body["data"]["test"] == "train"
    assert body["metrics"]["leakage.test_rows_in_train"] == 1.0
    version = workspace.register_model(report.artifacts["model"], "credit").version
    checks = {c.check: c for c in workspace.gate_report("credit", version, "production")}
    assert checks["held-out test data"].measured == "used in training"
    assert not checks["held-out test data"].passed
    card = workspace.model_card("credit", version)
    assert any("100.0% of the test rows also occur in the training rows" in item
               for item in card.limitations)  # fmt: skip


def test_shared_rows_are_counted_with_their_labels() -> None:
    import pandas as pd

    from sealml.evaluation.stages import _shared_share

    train = pd.DataFrame({"a": [1, 2, 3], "y": [0, 1, 0]})
    test = pd.DataFrame({"a": [1, 2, 4, 5], "y": [0, 0, 0, 1]})  # only (1, 0) is shared
    assert _shared_share(test, train) == 0.25
    assert _shared_share(test.iloc[:0], train) == 0.0


def test_model_card_from_verified_records(workspace: Workspace, tmp_path: Path, cli: Any) -> None:
    from sealml.governance import modelcard

    from ..conftest import admin_env

    folder = tmp_path / "credit"
    folder.mkdir()
    shutil.copy(DATA / "german_credit.csv", folder / "german_credit.csv")
    (folder / "credit_pipeline.py").write_text(textwrap.dedent(PIPELINE))
    report = workspace.run_pipeline(load_pipeline(folder / "credit_pipeline.py"))
    version = workspace.register_model(report.artifacts["model"], "credit").version
    facts = workspace.model_card("credit", version)
    text = modelcard.markdown(facts)
    for section in (
        "## Data sources",
        "## Provenance chain",
        "### Fairness by personal_status_sex",
        "### Robustness",
        "### Privacy risk",
        "## Gates",
        "## Limitations",
    ):
        assert section in text, section
    assert "german_credit.csv" in text and facts.sources[0]["sha256"] in text
    assert facts.parameters == {} or isinstance(facts.parameters, dict)
    page = modelcard.to_html(facts)
    assert page.count("<img") == 2 and "<table>" in page
    written = cli("model", "card", f"credit@{version}", "-o", str(tmp_path), env=admin_env())
    assert written.code == 0, written.stderr
    assert (tmp_path / f"credit-v{version}-card.html").read_text().startswith("<!doctype html>")
    assert "# Model card: credit" in (tmp_path / f"credit-v{version}-card.md").read_text()
    missing = cli("model", "card", "credit@1", "-o", str(tmp_path / "nope"), env=admin_env())
    assert missing.code == 2 and "not a folder" in missing.stderr


SCREENED = """
from pathlib import Path
from sklearn.ensemble import RandomForestClassifier
from sealml.data import stages as data
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"screened": "dataset"}, outputs={"model": "model"})
def train(screened):
    features = screened.select_dtypes("number").drop(columns=["credit_risk"])
    model = RandomForestClassifier(n_estimators=20, random_state=0)
    return {"model": model.fit(features, screened["credit_risk"])}


pipeline = Pipeline(
    "screened",
    stages=[data.ingest("raw", "credit"), data.screen("credit", "screened", label="credit_risk"),
            train],
    sources={"raw": Source(Path("german_credit.csv"))},
)
"""


def test_gates_read_the_screening_share(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "screened"
    folder.mkdir()
    shutil.copy(DATA / "german_credit.csv", folder / "german_credit.csv")
    (folder / "screened_pipeline.py").write_text(textwrap.dedent(SCREENED))
    report = workspace.run_pipeline(load_pipeline(folder / "screened_pipeline.py"))
    version = workspace.register_model(report.artifacts["model"], "screened").version
    workspace.config.registry.gates["staging"] = GateSection(
        max_metrics={"screening.flagged_share": 0.0}
    )
    workspace.approve_policy()
    checks = {c.check: c for c in workspace.gate_report("screened", version, "staging")}
    share = checks["screening.flagged_share"]
    assert float(share.measured) > 0 and not share.passed
    assert not checks["evaluation"].passed  # the share is not an evaluation report
    workspace.config.registry.gates["staging"] = GateSection(
        max_metrics={"screening.flagged_share": 0.5}
    )
    workspace.approve_policy()
    checks = {c.check: c for c in workspace.gate_report("screened", version, "staging")}
    assert checks["screening.flagged_share"].passed
