"""Watermark strength and cost on Adult, in the same run.

For a random forest and a gradient-boosting model (each an OrdinalEncoder pipeline), trains
on the Adult training file with and without a keyed trigger set of 100 inputs, then reports
on the Adult test file: the match rate and binomial p-value of the watermarked model, of
the same model trained without the watermark, and of an independently trained model (other
half of the data, other seed); and the clean test accuracy of both.

Targets: match >= 0.9 with p < 1e-9 for the watermarked model; chance level (p > 1e-3) for
the independent one; test accuracy within 0.5 points of the unwatermarked model.

Usage: python bench/watermark.py [--trees 200] [--count 100]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from sealml.models import watermark

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "income"


def load(name: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(DATA / name, skipinitialspace=True, na_values="?")
    labels = (frame[TARGET].str.rstrip(".") == ">50K").astype("int8")
    return frame.drop(columns=[TARGET]), labels


def model(kind: str, categorical: list[str], trees: int, seed: int) -> Any:
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-1), categorical)],
        remainder="passthrough",
    )  # fmt: skip
    if kind == "random_forest":
        estimator: Any = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=2)
    else:
        estimator = HistGradientBoostingClassifier(max_iter=trees, random_state=seed)
    return make_pipeline(encode, estimator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--count", type=int, default=watermark.DEFAULT_COUNT)
    args = parser.parse_args()
    train_x, train_y = load("adult_train.csv.gz")
    test_x, test_y = load("adult_test.csv.gz")
    categorical = [c for c in train_x.columns if not pd.api.types.is_numeric_dtype(train_x[c])]
    key = os.urandom(32)
    report: dict[str, Any] = {"train_rows": len(train_x), "test_rows": len(test_x), "models": {}}
    for kind in ("random_forest", "gradient_boosting"):
        start = time.perf_counter()
        marked = watermark.embed(
            model(kind, categorical, args.trees, 0), train_x, train_y, key, count=args.count
        )
        marked_seconds = time.perf_counter() - start
        start = time.perf_counter()
        clean = model(kind, categorical, args.trees, 0).fit(train_x, train_y)
        clean_seconds = time.perf_counter() - start
        _, other_x, _, other_y = train_test_split(train_x, train_y, test_size=0.5, random_state=7)
        independent = model(kind, categorical, args.trees, 11).fit(other_x, other_y)
        spec = watermark.spec_of(marked)
        marked_accuracy = float(marked.score(test_x, test_y))
        clean_accuracy = float(clean.score(test_x, test_y))
        results = {
            name: watermark.verify(m.predict, key, spec).to_dict()
            for name, m in (("watermarked", marked), ("unwatermarked", clean),
                            ("independent", independent))
        }  # fmt: skip
        report["models"][kind] = {
            **results,
            "accuracy_watermarked": round(marked_accuracy, 5),
            "accuracy_unwatermarked": round(clean_accuracy, 5),
            "accuracy_delta_points": round(100 * (marked_accuracy - clean_accuracy), 3),
            "fit_seconds": {
                "watermarked": round(marked_seconds, 2),
                "unwatermarked": round(clean_seconds, 2),
            },
            "targets": {
                "match_rate_at_least_0.9": results["watermarked"]["match_rate"] >= 0.9,
                "p_value_below_1e-9": results["watermarked"]["p_value"] < 1e-9,
                "independent_at_chance": results["independent"]["p_value"] > 1e-3,
                "accuracy_within_0.5_points": abs(marked_accuracy - clean_accuracy) <= 0.005,
            },
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
