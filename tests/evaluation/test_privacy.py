"""Membership inference with known orderings, hardening, and the privacy gate."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from sealml.config import GateSection
from sealml.errors import UsageError
from sealml.evaluation import privacy
from sealml.models.registry import gate_failures

from ..conftest import DATA

GATE = GateSection(max_metrics={"privacy.membership_auc": 0.6})


@pytest.fixture(scope="module")
def german() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    frame = pd.read_csv(DATA / "german_credit.csv")
    labels = frame.pop("credit_risk")
    features = pd.get_dummies(frame).astype(float)
    features = (features - features.mean()) / (features.std() + 1e-9)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.5, random_state=0
    )
    return train_x, test_x, train_y, test_y


def overfit() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=60, random_state=0)


def regularised() -> LogisticRegression:
    return LogisticRegression(C=0.05, max_iter=2000)


def test_overfitted_model_leaks_more_and_fails_the_gate(german: tuple) -> None:
    train_x, test_x, train_y, test_y = german
    results = {}
    for name, make in (("overfit", overfit), ("regularised", regularised)):
        model = make().fit(train_x, train_y)
        report = privacy.assess(
            model, (train_x, train_y), (test_x, test_y),
            train=lambda x, y, make=make: make().fit(x, y), shadows=2,
        )  # fmt: skip
        assert {a.attack for a in report.attacks} == {"threshold", "shadow"}
        results[name] = report.metrics()
    assert results["overfit"]["privacy.membership_auc"] > 0.7
    assert results["regularised"]["privacy.membership_auc"] < 0.6
    assert gate_failures(GATE, has_provenance=True, metrics=results["overfit"])
    assert gate_failures(GATE, has_provenance=True, metrics=results["regularised"]) == []


def test_label_only_outputs_reduce_the_risk(german: tuple) -> None:
    train_x, test_x, train_y, test_y = german
    model = overfit().fit(train_x, train_y)
    full = privacy.assess(model, (train_x, train_y), (test_x, test_y)).metrics()
    labels_only = privacy.assess(
        model, (train_x, train_y), (test_x, test_y), hardening="label"
    ).metrics()
    assert labels_only["privacy.membership_auc"] < full["privacy.membership_auc"] - 0.1


def test_harden() -> None:
    hardened = privacy.harden([[0.26, 0.74], [0.9, 0.1]], "label")
    assert hardened.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert privacy.harden([[0.26, 0.74]], "round").tolist() == [[0.3, 0.7]]
    with pytest.raises(UsageError, match="hardening must be"):
        privacy.harden([[1.0]], "blur")


def test_too_few_rows_is_refused(german: tuple) -> None:
    train_x, test_x, train_y, test_y = german
    model = regularised().fit(train_x, train_y)
    with pytest.raises(UsageError, match="at least 20"):
        privacy.assess(model, (train_x[:5], train_y[:5]), (test_x, test_y))
