"""The secure pipeline ``sealml demo`` runs on the Adult census data shipped with sealml.

pinned ingest -> validation -> PII handling -> poisoning screening -> split ->
watermarked training -> evaluation (accuracy, robustness, fairness, privacy).
Everything it reads and writes is sealed, signed, attested and audited by the runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sealml.data import stages as data
from sealml.evaluation import stages as evaluation
from sealml.pipeline import Pipeline, Source, stage

LABEL = "income"
SENSITIVE = ["sex", "race"]
DATASET_SHA256 = "53a2c4907656c3be5990efdb07b9a42942956d0215552b5fffa1b87381b51252"
NUMBERS = {"age": (17, 90), "education-num": (1, 16), "capital-gain": (0, 99_999),
           "capital-loss": (0, 4_356), "hours-per-week": (1, 99)}  # fmt: skip
SCHEMA = {
    "columns": {
        **{n: {"dtype": "int", "min": low, "max": high} for n, (low, high) in NUMBERS.items()},
        "fnlwgt": {"dtype": "int", "min": 0},
        **{name: {"dtype": "str"} for name in (
            "workclass", "education", "marital-status", "occupation", "relationship", "race",
            "sex", "native-country")},
        LABEL: {"dtype": "int", "allowed": [0, 1]},
    },
    "rows": {"min": 30_000},
}  # fmt: skip


@stage(inputs={"census": "dataset"}, outputs={"labelled": "dataset"})
def label(census: pd.DataFrame) -> dict[str, Any]:
    """The income class as 0/1 (the raw file writes ``<=50K`` / ``>50K``)."""
    frame = census.copy()
    frame[LABEL] = (frame[LABEL].astype(str).str.rstrip(".") == ">50K").astype("int64")
    return {"labelled": frame}


@stage(inputs={"screened": "dataset"}, outputs={"train": "dataset", "test": "dataset"})
def split(screened: pd.DataFrame, test_share: float = 0.3, seed: int = 0) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        screened, test_size=test_share, random_state=seed, stratify=screened[LABEL]
    )
    return {"train": train, "test": test}


def make_model(features: pd.DataFrame, iterations: int = 150) -> Any:
    """The demo's gradient-boosting pipeline (categories ordinal-encoded), unfitted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
          categorical)],
        remainder="passthrough",
    )  # fmt: skip
    return make_pipeline(
        encode, HistGradientBoostingClassifier(max_iter=iterations, random_state=0)
    )


@stage(inputs={"train": "dataset"}, outputs={"model": "model"}, secrets=("watermark",))
def train(train: pd.DataFrame, watermark_key: str, iterations: int = 150) -> dict[str, Any]:
    """Gradient boosting on everything but the sensitive attributes, watermarked."""
    from sealml.models import watermark

    features = train.drop(columns=[LABEL, *SENSITIVE])
    model = make_model(features, iterations)
    watermark.embed(model, features, train[LABEL], bytes.fromhex(watermark_key))
    return {"model": model}


pipeline = Pipeline(
    "adult-income",
    stages=[
        data.ingest("raw", "census"),
        label,
        data.validate("labelled", "validated", schema=SCHEMA),
        data.protect("validated", "protected", actions={"fnlwgt": "drop"}),
        data.screen("protected", "screened", label=LABEL, max_flagged_share=0.2),
        split,
        train,
        evaluation.evaluate(
            "model",
            "test",
            "evaluation",
            label=LABEL,
            sensitive=SENSITIVE,
            members="train",
            budgets=[0.1, 0.3],
            immutable=["education-num"],
            robustness_rows=300,
        ),
    ],
    sources={"raw": Source(Path("adult.csv.gz"), sha256=DATASET_SHA256)},
)
