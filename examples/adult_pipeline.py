"""Income prediction on UCI Adult: ingest a CSV, split, train, evaluate.

Run it sealed, with signed provenance for every step:

    sealml run examples/adult_pipeline.py                      # in this process
    sealml run examples/adult_pipeline.py --executor sandbox   # each stage in bubblewrap
    sealml run examples/adult_pipeline.py --executor ray       # each stage a Ray task
    sealml run examples/adult_pipeline.py --param test_size=0.3

Every executor gives the same artifact digests; a second run reuses every stage.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from sealml.pipeline import Pipeline, Source, stage

TARGET = "income"


@stage(inputs={"raw_csv": "file"}, outputs={"adult": "dataset"})
def ingest(raw_csv: bytes) -> dict[str, Any]:
    """Parse the CSV; normalise labels (the test file of Adult ends them with a period)."""
    frame = pd.read_csv(
        io.BytesIO(raw_csv), compression="gzip", skipinitialspace=True, na_values="?"
    )
    frame[TARGET] = (frame[TARGET].str.rstrip(".") == ">50K").astype("int8")
    return {"adult": frame}


@stage(inputs={"adult": "dataset"}, outputs={"train": "dataset", "test": "dataset"})
def split(adult: pd.DataFrame, test_size: float = 0.25, seed: int = 0) -> dict[str, Any]:
    train, test = train_test_split(
        adult, test_size=test_size, random_state=seed, stratify=adult[TARGET]
    )
    return {"train": train, "test": test}


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[TARGET])


@stage(inputs={"train": "dataset"}, outputs={"model": "model"})
def train(train: pd.DataFrame, max_iter: int = 200, learning_rate: float = 0.1, seed: int = 0) -> dict[str, Any]:
    features = _features(train)
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-1), categorical)],
        remainder="passthrough",
    )
    model = make_pipeline(
        encode,
        HistGradientBoostingClassifier(
            max_iter=max_iter, learning_rate=learning_rate, random_state=seed,
            categorical_features=list(range(len(categorical))),
        ),
    )
    model.fit(features, train[TARGET])
    return {"model": model}


@stage(inputs={"model": "model", "test": "dataset"}, outputs={"metrics": "report"})
def evaluate(model: Any, test: pd.DataFrame) -> dict[str, Any]:
    features = _features(test)
    scores = model.predict_proba(features)[:, 1]
    return {
        "metrics": {
            "rows": len(test),
            "accuracy": round(float(accuracy_score(test[TARGET], scores > 0.5)), 6),
            "roc_auc": round(float(roc_auc_score(test[TARGET], scores)), 6),
        }
    }


pipeline = Pipeline(
    "adult-income",
    stages=[ingest, split, train, evaluate],
    sources={"raw_csv": Source(Path("../../shared/data/adult_train.csv.gz"))},
)
