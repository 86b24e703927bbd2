"""Evasion robustness on Adult: sealml's attacks next to the Adversarial Robustness
Toolbox's, same models, same rows, same budget, same run.

Models: gradient boosting (HistGradientBoosting on ordinal-encoded categories) and logistic
regression (one-hot categories, standardised numbers), both scikit-learn pipelines trained
on ``adult_train.csv.gz``. Rows: a sample of ``adult_test.csv.gz`` the model gets right.
Budget: every numeric feature may move by ``epsilon`` standard deviations (an L-infinity
ball in standardised units); categorical features stay fixed (ART works on numbers only).

ART runs as a black box on the standardised numeric features (the model sees the rebuilt
frame): HopSkipJump (decision-based, L-inf) and ZOO (score-based, estimated gradients).
An ART example counts only if it flips the prediction within the budget (ART's output is
not rounded to integers, which favours it). sealml's attacks also keep integers integral.

Target: sealml finds at least as many adversarial examples as ART under the same budget,
in no more time. Prints one JSON object.

Usage: python bench/robustness.py [--rows 60] [--epsilons 0.3]  (ART takes about 2 s a row)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from sealml.evaluation import robustness
from sealml.evaluation.robustness import Budget

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "income"


def load(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(DATA / name, skipinitialspace=True, na_values="?")
    labels = (frame.pop(TARGET).str.rstrip(".") == ">50K").astype(int).to_numpy()
    return frame, labels


def models(categorical: list[str], numeric: list[str]) -> dict[str, Any]:
    boosting = make_pipeline(
        ColumnTransformer(
            [("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                  encoded_missing_value=-1), categorical)],
            remainder="passthrough",
        ),
        HistGradientBoostingClassifier(max_iter=200, random_state=0),
    )  # fmt: skip
    linear = make_pipeline(
        ColumnTransformer(
            [("c", OneHotEncoder(handle_unknown="ignore"), categorical),
             ("n", StandardScaler(), numeric)],
        ),
        LogisticRegression(max_iter=2000),
    )  # fmt: skip
    return {"gradient_boosting": boosting, "logistic_regression": linear}


def art_attacks(
    model: Any, rows: pd.DataFrame, labels: np.ndarray, numeric: list[str],
    reference: pd.DataFrame, epsilon: float,
) -> dict[str, Any]:  # fmt: skip
    """ART's black-box attacks in standardised numeric space; success within the budget."""
    from art.attacks.evasion import HopSkipJump, ZooAttack
    from art.estimators.classification import BlackBoxClassifier

    mean = reference[numeric].mean().to_numpy()
    scale = reference[numeric].std(ddof=0).to_numpy()
    low = ((reference[numeric].min().to_numpy() - mean) / scale).astype(np.float32)
    high = ((reference[numeric].max().to_numpy() - mean) / scale).astype(np.float32)
    origin = ((rows[numeric].to_numpy(dtype=float) - mean) / scale).astype(np.float32)

    def rebuild(z: np.ndarray, index: np.ndarray) -> pd.DataFrame:
        frame = rows.iloc[index].reset_index(drop=True).copy()
        frame[numeric] = z * scale + mean
        return frame

    results = {}
    for name in ("HopSkipJump", "ZOO"):
        broken = np.zeros(len(rows), dtype=bool)
        start = time.perf_counter()
        for i in range(len(rows)):

            def predict(z: np.ndarray, i: int = i) -> np.ndarray:
                return model.predict_proba(rebuild(z, np.full(len(z), i)))

            classifier = BlackBoxClassifier(
                predict, input_shape=(len(numeric),), nb_classes=2, clip_values=(low, high)
            )
            if name == "HopSkipJump":
                attack: Any = HopSkipJump(
                    classifier, norm=np.inf, max_iter=10, max_eval=200, init_eval=20,
                    verbose=False,
                )  # fmt: skip
            else:
                attack = ZooAttack(
                    classifier, max_iter=20, nb_parallel=len(numeric), batch_size=1,
                    use_resize=False, use_importance=False, verbose=False,
                )  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = attack.generate(origin[i : i + 1], y=np.eye(2)[labels[i : i + 1]])
            delta = np.abs(found - origin[i : i + 1]).max()
            flipped = model.predict(rebuild(found, np.array([i])))[0] != labels[i]
            broken[i] = bool(flipped and delta <= epsilon + 1e-6)
        results[name] = {
            "success_rate": round(float(broken.mean()), 4),
            "seconds": round(time.perf_counter() - start, 2),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--epsilons", default="0.3")
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    train_x, train_y = load("adult_train.csv.gz")
    test_x, test_y = load("adult_test.csv.gz")
    categorical = [c for c in train_x.columns if not pd.api.types.is_numeric_dtype(train_x[c])]
    numeric = [c for c in train_x.columns if c not in categorical]
    report: dict[str, Any] = {"rows": args.rows, "numeric_features": numeric, "models": {}}
    for name, model in models(categorical, numeric).items():
        model.fit(train_x, train_y)
        right = np.flatnonzero(model.predict(test_x) == test_y)
        pick = np.random.default_rng(0).choice(right, args.rows, replace=False)
        rows, labels = test_x.iloc[pick].reset_index(drop=True), test_y[pick]
        entry: dict[str, Any] = {
            "clean_accuracy": round(float((model.predict(test_x) == test_y).mean()), 4)
        }
        for epsilon in epsilons:
            budget = Budget(epsilon, immutable=tuple(categorical))
            start = time.perf_counter()
            (ours,) = robustness.assess(
                model, rows, labels, [budget], rows=len(rows), reference=train_x
            )
            ours_seconds = time.perf_counter() - start
            art = art_attacks(model, rows, labels, numeric, train_x, epsilon)
            best_art = max(r["success_rate"] for r in art.values())
            ours_rate = round(1 - ours.robust_accuracy / ours.clean_accuracy, 4)
            entry[f"epsilon={epsilon:g}"] = {
                "sealml": {
                    "success_rate_any_attack": round(ours_rate, 4),
                    "attacks": [a.to_dict() for a in ours.attacks],
                    "robust_accuracy_on_sample": ours.robust_accuracy,
                    "seconds": round(ours_seconds, 2),
                },
                "art": art,
                "targets": {
                    "at_least_as_many_as_art": ours_rate >= best_art,
                    "no_more_time_than_art": ours_seconds
                    <= min(r["seconds"] for r in art.values()),
                },
            }
        report["models"][name] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
