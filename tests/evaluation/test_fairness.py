"""Fairness metrics with known answers, the gate, and mitigations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from sealml.config import GateSection
from sealml.errors import UsageError
from sealml.evaluation import fairness
from sealml.models.registry import gate_failures

GATE = GateSection(max_metrics={"fairness.demographic_parity_difference": 0.1})


def test_known_rates_and_gaps() -> None:
    truth = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    predicted = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    groups = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4})
    report = fairness.assess(truth, predicted, groups, n_boot=0, min_group_size=1)
    (attribute,) = report.attributes
    rates = {row["group"]: row for row in attribute.groups}
    assert rates["a"]["selection_rate"] == 0.75 and rates["b"]["selection_rate"] == 0.25
    assert rates["a"]["true_positive_rate"] == 1.0 and rates["b"]["true_positive_rate"] == 0.5
    assert rates["a"]["false_positive_rate"] == 0.5 and rates["b"]["false_positive_rate"] == 0.0
    assert attribute.demographic_parity_difference == 0.5
    assert attribute.demographic_parity_ratio == pytest.approx(1 / 3, abs=1e-6)
    assert attribute.equalized_odds_difference == 0.5


def test_intersection_and_intervals() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"sex": rng.choice(["f", "m"], 2000), "race": rng.choice(["x", "y"], 2000)}
    )
    truth = rng.integers(0, 2, 2000)
    predicted = rng.integers(0, 2, 2000)
    report = fairness.assess(truth, predicted, frame, n_boot=50)
    names = [a.attribute for a in report.attributes]
    assert names == ["sex", "race", "sex & race"]
    for attribute in report.attributes:
        low, high = attribute.intervals["demographic_parity_difference"]
        assert low <= attribute.demographic_parity_difference <= high + 0.02
    assert report.metrics()["fairness.demographic_parity_difference"] < 0.1


def biased_data() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = 4000
    group = rng.choice(["a", "b"], rows)
    skill = rng.normal(0, 1, rows)
    proxy = (group == "a") + rng.normal(0, 0.3, rows)
    labels = pd.Series(((skill + 1.2 * (group == "a") + rng.normal(0, 0.5, rows)) > 0.8) * 1)
    return pd.DataFrame({"skill": skill, "proxy": proxy}), labels, pd.DataFrame({"group": group})


def test_biased_model_fails_the_gate_and_passes_after_mitigation() -> None:
    features, labels, groups = biased_data()
    biased = LogisticRegression().fit(features, labels)
    before = fairness.assess(labels, biased.predict(features), groups).metrics()
    failures = gate_failures(GATE, has_provenance=True, metrics=before)
    assert failures and "fairness.demographic_parity_difference" in failures[0]
    fixed = fairness.mitigate(
        LogisticRegression(), features, labels, groups, method="exponentiated_gradient"
    )
    after = fairness.assess(labels, fixed.predict(features), groups).metrics()
    assert gate_failures(GATE, has_provenance=True, metrics=after) == []
    assert (
        after["fairness.demographic_parity_difference"]
        < before["fairness.demographic_parity_difference"] / 3
    )


@pytest.mark.parametrize("method", ["reweighing", "threshold_optimizer"])
def test_other_mitigations_reduce_the_gap(method: str) -> None:
    features, labels, groups = biased_data()
    before = fairness.assess(
        labels, LogisticRegression().fit(features, labels).predict(features), groups
    ).metrics()["fairness.demographic_parity_difference"]
    model = fairness.mitigate(LogisticRegression(), features, labels, groups, method=method)
    if method == "threshold_optimizer":
        predicted = model.predict(features, sensitive_features=groups["group"], random_state=0)
    else:
        predicted = model.predict(features)
    after = fairness.assess(labels, predicted, groups).metrics()
    assert after["fairness.demographic_parity_difference"] < before


def test_reweighing_makes_label_and_group_independent() -> None:
    _, labels, groups = biased_data()
    weights = fairness.reweighing_weights(labels, groups)
    frame = pd.DataFrame({"y": labels, "g": groups["group"], "w": weights})
    weighted = frame.groupby("g").apply(lambda part: np.average(part["y"], weights=part["w"]))
    assert weighted["a"] == pytest.approx(weighted["b"], abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(UsageError, match="differ in length"):
        fairness.assess([1, 0], [1], pd.DataFrame({"g": ["a", "b"]}))
    with pytest.raises(UsageError, match="mitigation must be"):
        fairness.mitigate(LogisticRegression(), None, None, None, method="magic")
    with pytest.raises(UsageError, match="at least one sensitive"):
        fairness.assess([1], [1], pd.DataFrame(index=[0]))


def test_rates_resting_on_few_rows_are_listed_but_not_gated() -> None:
    """A small intersection's rates are noise: they are reported, not used for the gaps."""
    rng = np.random.default_rng(1)
    big = 600
    truth = np.concatenate([rng.integers(0, 2, 2 * big), [1, 1, 0, 0, 0]])
    predicted = np.concatenate([truth[: 2 * big], [0, 0, 1, 1, 1]])  # the tiny group: all wrong
    groups = pd.DataFrame({"g": ["a"] * big + ["b"] * big + ["tiny"] * 5})
    (gated,) = fairness.assess(truth, predicted, groups, n_boot=20).attributes
    rows = {row["group"]: row for row in gated.groups}
    assert rows["tiny"]["count"] == 5 and rows["tiny"]["counted"] == []
    assert rows["a"]["counted"] == ["selection_rate", "true_positive_rate", "false_positive_rate"]
    assert gated.equalized_odds_difference == 0.0  # a and b are both perfect
    assert gated.intervals["equalized_odds_difference"] == [0.0, 0.0]
    (everything,) = fairness.assess(truth, predicted, groups, n_boot=0, min_group_size=1).attributes
    assert everything.equalized_odds_difference == 1.0
