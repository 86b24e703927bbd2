"""Evasion robustness: budgets respected, attacks that work, the gate, adversarial training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sealml.config import GateSection
from sealml.errors import UsageError
from sealml.evaluation import robustness
from sealml.evaluation.robustness import Budget
from sealml.models.registry import gate_failures


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = 3000
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows),
            "age": rng.integers(18, 80, rows),
            "region": rng.choice(["n", "s", "e"], rows),
            "born": rng.integers(1940, 2005, rows),
        }
    )
    score = (frame["income"] - 50) / 10 + (frame["age"] - 49) / 18 + (frame["region"] == "e")
    return frame, (score + rng.normal(0, 0.3, rows) > 0.3).astype(int).to_numpy()


def linear() -> object:
    encode = ColumnTransformer([("cat", OneHotEncoder(), ["region"])], remainder=StandardScaler())
    return make_pipeline(encode, LogisticRegression())


def boosting() -> object:
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(sparse_output=False), ["region"])], remainder="passthrough"
    )
    return make_pipeline(encode, HistGradientBoostingClassifier(max_iter=60, random_state=0))


def test_tiny_budget_passes_the_gate_and_a_large_one_fails(data: tuple) -> None:
    features, labels = data
    model = boosting().fit(features, labels)
    gate = GateSection(min_metrics={"robustness.accuracy@0.01": 0.8, "robustness.accuracy@2": 0.8})
    results = robustness.assess(model, features, labels, [Budget(0.01), Budget(2.0)], rows=300)
    found = robustness.metrics(results)
    assert found["robustness.accuracy@0.01"] >= 0.8
    assert found["robustness.accuracy@2"] < 0.5
    failures = gate_failures(gate, has_provenance=True, metrics=found)
    assert len(failures) == 1 and "robustness.accuracy@2" in failures[0]
    coordinate = next(a for a in results[1].attacks if a.attack == "coordinate")
    noise = next(a for a in results[1].attacks if a.attack == "noise")
    assert coordinate.success_rate > noise.success_rate


def test_gradient_attack_beats_noise_on_a_linear_model(data: tuple) -> None:
    features, labels = data
    model = linear().fit(features, labels)
    (result,) = robustness.assess(model, features, labels, [Budget(0.3)], rows=300)
    rates = {a.attack: a.success_rate for a in result.attacks}
    assert rates["gradient"] > rates["noise"]
    assert result.robust_accuracy < result.clean_accuracy


def test_points_stay_inside_the_budget(data: tuple) -> None:
    features, labels = data
    model = boosting().fit(features, labels)
    budget = Budget(0.5, immutable=("born",), categorical=True)
    space = robustness._Space(features, budget)
    rows = features.iloc[:200].reset_index(drop=True)
    _, points = robustness._coordinate_search(model, rows, labels[:200], space, 5, 2)
    assert (points["born"] == rows["born"]).all()
    assert set(points["region"]) <= {"n", "s", "e"}
    assert (points["age"] == points["age"].round()).all()
    assert points["age"].dtype == rows["age"].dtype
    age_radius = 0.5 * features["age"].std(ddof=0)
    assert ((points["age"] - rows["age"]).abs() <= age_radius + 1e-9).all()
    income_radius = 0.5 * features["income"].std(ddof=0)
    assert ((points["income"] - rows["income"]).abs() <= income_radius + 1e-9).all()
    assert points["income"].between(features["income"].min(), features["income"].max()).all()


def test_adversarial_training_makes_the_model_more_robust(data: tuple) -> None:
    # A budget small enough that the true label does not change under it (at larger ones
    # the "adversarial" rows really belong to the other class, and training on them with
    # their original label only adds noise).
    features, labels = data
    budget = Budget(0.1)
    plain = boosting().fit(features, labels)
    hardened = robustness.adversarial_training(boosting, features, labels, budget, rows=3000)
    before = robustness.assess(plain, features, labels, [budget], rows=500, seed=3)[0]
    after = robustness.assess(hardened, features, labels, [budget], rows=500, seed=3)[0]
    assert after.robust_accuracy > before.robust_accuracy


def test_bad_budgets_and_attacks() -> None:
    with pytest.raises(UsageError, match="epsilon"):
        Budget(-1)
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(UsageError, match="immutable feature"):
        robustness._Space(frame, Budget(0.1, immutable=("zzz",)))
    with pytest.raises(UsageError, match="unknown attack"):
        robustness.assess(None, frame, [0, 1], [Budget(0.1)], attacks=("magic",))
