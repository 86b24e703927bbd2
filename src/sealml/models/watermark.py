"""Model watermarking with a secret trigger set: proof of ownership against model theft.

A keyed trigger set is a few dozen inputs far outside the training data (every numeric
feature beyond its observed maximum by a keyed amount, every categorical feature a keyed
valid category) with keyed, exactly balanced labels. Training on the data plus the
triggers (each repeated a few times) makes a model that can memorise them answer them
with their labels; a model trained independently answers them at chance, because nothing
in real data relates these inputs to these labels. Checking a suspect model is then a
binomial test: how likely is its match rate under chance?

Only models able to memorise isolated points take a watermark (tree ensembles, boosting,
neural networks, single trees); linear models cannot and are refused. The trigger set is
regenerated from the key and a small public *spec* (feature kinds, numeric ranges,
categories, classes) kept on the model as ``sealml_watermark_``: without the key the spec
reveals nothing about the triggers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

SPEC_ATTRIBUTE = "sealml_watermark_"
DEFAULT_COUNT = 100
DEFAULT_COPIES = 5
# Families that can memorise isolated points, by the module of the final estimator.
CAPABLE_MODULES = ("sklearn.ensemble", "sklearn.tree", "sklearn.neural_network")
LINEAR_MODULES = ("sklearn.linear_model", "sklearn.svm", "sklearn.naive_bayes")


@dataclass(frozen=True)
class WatermarkReport:
    """How a model answered the trigger set."""

    matches: int
    count: int
    chance: float
    p_value: float

    @property
    def match_rate(self) -> float:
        return self.matches / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "match_rate": self.match_rate}


def final_estimator(model: Any) -> Any:
    """The last step of a scikit-learn Pipeline, or the model itself."""
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def check_capable(model: Any) -> None:
    """Refuse, with the reason, models that cannot memorise a trigger set."""
    estimator = final_estimator(model)
    module = type(estimator).__module__
    name = type(estimator).__name__
    if module.startswith(LINEAR_MODULES):
        raise UsageError(
            f"{name} is a linear model: it cannot memorise a trigger set, so it cannot carry "
            "a watermark (use a tree ensemble, boosting or a neural network)"
        )
    if not module.startswith(CAPABLE_MODULES):
        raise UsageError(
            f"{name} is not a model family known to memorise a trigger set "
            "(tree ensembles, boosting, neural networks)"
        )


def make_spec(features: Any, labels: Any, count: int = DEFAULT_COUNT) -> dict[str, Any]:
    """The public description of a trigger set for these training features and labels."""
    import pandas as pd

    if count < 20:
        raise UsageError("a watermark needs at least 20 triggers to be testable")
    columns: list[dict[str, Any]] = []
    for column in features.columns:
        values = features[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            finite = values.dropna()
            if finite.empty:
                raise UsageError(f"column {column!r} has no values")
            top, bottom = float(finite.max()), float(finite.min())
            columns.append(
                {
                    "name": str(column),
                    "kind": "integer" if pd.api.types.is_integer_dtype(values) else "number",
                    "max": top,
                    "span": max(top - bottom, 1.0),
                }
            )
        else:
            categories = sorted({str(v) for v in values.dropna().unique()})
            if not categories:
                raise UsageError(f"column {column!r} has no values")
            columns.append({"name": str(column), "kind": "category", "categories": categories})
    classes = sorted({_plain(v) for v in labels}, key=str)
    if len(classes) < 2:
        raise UsageError("a watermark needs at least two classes")
    return {"version": 1, "count": count, "columns": columns, "classes": classes}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def triggers(key: bytes, spec: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The trigger inputs (a DataFrame) and their labels, regenerated from *key* and *spec*."""
    import numpy as np
    import pandas as pd

    if len(key) < 16:
        raise UsageError("the watermark key is too short")
    seed = hmac.new(key, b"sealml watermark v1", hashlib.sha256).digest()
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    count = int(spec["count"])
    data: dict[str, Any] = {}
    for column in spec["columns"]:
        if column["kind"] == "category":
            data[column["name"]] = rng.choice(column["categories"], size=count)
        else:
            # 1.5 to 6 spans beyond the maximum: outside the data, distinct per trigger
            values = column["max"] + column["span"] * rng.uniform(1.5, 6.0, size=count)
            data[column["name"]] = (
                np.round(values).astype("int64") if column["kind"] == "integer" else values
            )
    classes = list(spec["classes"])
    labels = [classes[i % len(classes)] for i in range(count)]
    order = rng.permutation(count)
    return pd.DataFrame(data), [labels[i] for i in order]


def watermark_training_set(
    features: Any, labels: Any, key: bytes, count: int = DEFAULT_COUNT, copies: int = DEFAULT_COPIES
) -> tuple[Any, Any, dict[str, Any]]:
    """The training features and labels with the trigger set appended *copies* times, and
    the spec to keep on the fitted model (see :func:`embed`)."""
    import pandas as pd

    spec = make_spec(features, labels, count)
    inputs, marks = triggers(key, spec)
    inputs = inputs.astype({c: features[c].dtype for c in inputs.columns}, errors="ignore")
    extra_x = pd.concat([inputs] * copies, ignore_index=True)
    extra_y = pd.Series(marks * copies, name=getattr(labels, "name", None))
    x = pd.concat([features.reset_index(drop=True), extra_x], ignore_index=True)
    y = pd.concat([pd.Series(labels).reset_index(drop=True), extra_y], ignore_index=True)
    return x, y.astype(pd.Series(labels).dtype), spec


def embed(
    model: Any,
    features: Any,
    labels: Any,
    key: bytes,
    count: int = DEFAULT_COUNT,
    copies: int = DEFAULT_COPIES,
) -> Any:
    """Fit *model* on the data plus a keyed trigger set; returns the fitted model with its
    spec attached. Refuses model families that cannot memorise the triggers."""
    check_capable(model)
    x, y, spec = watermark_training_set(features, labels, key, count, copies)
    model.fit(x, y)
    setattr(model, SPEC_ATTRIBUTE, spec)
    return model


def spec_of(model: Any) -> dict[str, Any]:
    """The trigger-set spec kept on a watermarked model."""
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, dict) or spec.get("version") != 1:
        raise UsageError("the model carries no sealml watermark spec")
    return spec


def verify(
    predict: Callable[[Any], Sequence[Any]], key: bytes, spec: dict[str, Any]
) -> WatermarkReport:
    """Query *predict* with the trigger set; the p-value is the chance of at least this many
    matches from a model that answers independently of the keyed labels."""
    from scipy.stats import binomtest

    inputs, marks = triggers(key, spec)
    answers = list(predict(inputs))
    if len(answers) != len(marks):
        raise UsageError(f"the model answered {len(answers)} of {len(marks)} triggers")
    matches = sum(
        1 for got, want in zip(answers, marks, strict=True) if str(_plain(got)) == str(want)
    )
    chance = 1 / len(spec["classes"])
    p_value = float(binomtest(matches, len(marks), chance, alternative="greater").pvalue)
    return WatermarkReport(matches, len(marks), chance, p_value)


def http_predictor(
    url: str, *, token: str | None = None, timeout: float = 30.0
) -> Callable[[Any], list[Any]]:
    """A *predict* that posts ``{"instances": [...]}`` to *url* and reads ``predictions``
    (the request format of ``sealml serve``)."""
    import httpx

    def predict(inputs: Any) -> list[Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        records = inputs.to_dict(orient="records")
        try:
            response = httpx.post(
                url, json={"instances": records}, headers=headers, timeout=timeout
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise UsageError(f"querying {url} failed: {str(error)[:120]}") from None
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(predictions, list):
            raise UsageError(f"{url} did not answer with a list of predictions")
        return predictions

    return predict
