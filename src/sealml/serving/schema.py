"""The request schema of a served model, generated from its sealed feature profile, and
the out-of-distribution score of each instance.

Every input is required; numbers are finite and within the training range widened by a
margin; categories are the ones seen in training; unknown fields are refused. The schema is
what FastAPI validates and publishes in the OpenAPI document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    create_model,
    with_config,
)
from typing_extensions import TypedDict

from ..data.profile import MAX_CATEGORIES, FeatureProfile, Profile

MAX_TEXT = 256
MAX_FEATURES = 10_000
MAX_EXPLAIN = 10


def _bounds(feature: FeatureProfile, margin: float) -> tuple[float | None, float | None]:
    if feature.minimum is None or feature.maximum is None:
        return None, None
    pad = margin * max(feature.maximum - feature.minimum, abs(feature.maximum), 1.0)
    return feature.minimum - pad, feature.maximum + pad


def _integral(value: Any) -> int:
    """An integer as JSON Schema means it: 3 and 3.0, never "3", true or 3.5."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("Input should be a valid integer")


def _field_type(feature: FeatureProfile, margin: float) -> Any:
    low, high = _bounds(feature, margin)
    annotation: Any
    if feature.kind == "integer":
        annotation = Annotated[
            int,
            Field(
                ge=None if low is None else math.floor(low),
                le=None if high is None else math.ceil(high),
            ),
            BeforeValidator(_integral),
        ]
    elif feature.kind == "number":
        annotation = Annotated[float, Field(allow_inf_nan=False, ge=low, le=high)]
    elif feature.kind == "boolean":
        annotation = StrictBool
    elif feature.categories and len(feature.categories) < MAX_CATEGORIES:
        annotation = Literal[tuple(sorted(feature.categories))]
    else:
        annotation = Annotated[str, Field(strict=True, max_length=MAX_TEXT)]
    if feature.missing_rate > 0:
        annotation = annotation | None
    return annotation


@dataclass(frozen=True)
class RequestSchema:
    """The pydantic types of a model's requests, and how to turn a valid one into input."""

    request: type[BaseModel]
    explain: type[BaseModel]  # the same instances, at most MAX_EXPLAIN of them
    features: tuple[str, ...] | None  # None: positional inputs (a list of numbers)

    def frame(self, instances: list[Any]) -> Any:
        """The model input for validated *instances*."""
        import pandas as pd

        if self.features is None:
            return np.asarray(instances, dtype="float64")
        return pd.DataFrame.from_records(instances, columns=self.features)


def _request_model(name: str, instance: Any, max_batch: int) -> type[BaseModel]:
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        instances=(list[instance], Field(min_length=1, max_length=max_batch)),
    )


def request_schema(
    profile: Profile | None, *, n_features: int | None, max_batch: int, margin: float
) -> RequestSchema:
    """The schema for a model with *profile* (or, without one, *n_features* numbers)."""
    if profile is None:
        size = {"min_length": n_features, "max_length": n_features} if n_features else {}
        row = Annotated[
            list[Annotated[float, Field(allow_inf_nan=False)]],
            Field(**size) if size else Field(min_length=1, max_length=MAX_FEATURES),
        ]
        return RequestSchema(
            _request_model("PredictRequest", row, max_batch),
            _request_model("ExplainRequest", row, min(max_batch, MAX_EXPLAIN)),
            None,
        )
    fields = {f.name: _field_type(f, margin) for f in profile.features}
    instance = with_config(ConfigDict(extra="forbid"))(TypedDict("Instance", fields))  # type: ignore[operator]
    return RequestSchema(
        _request_model("PredictRequest", instance, max_batch),
        _request_model("ExplainRequest", instance, min(max_batch, MAX_EXPLAIN)),
        tuple(f.name for f in profile.features),
    )


def numeric_features(profile: Profile | None) -> list[FeatureProfile]:
    """The profile's numeric inputs, in model order: the columns of :func:`numeric_rows`."""
    return [f for f in (profile.features if profile else ()) if f.kind in ("integer", "number")]


def numeric_rows(instances: list[Any], names: list[str]) -> list[list[float]]:
    """The numeric inputs of validated instances, one list per instance (null as NaN).

    Plain Python on purpose: for the small batches of online serving, this and the
    per-instance checks built on it cost microseconds where NumPy on tiny arrays or
    selecting DataFrame columns costs tens to hundreds.
    """
    return [[math.nan if (v := i[n]) is None else float(v) for n in names] for i in instances]


class OodScorer:
    """How far an instance lies from the training data: the largest absolute z-score over
    its numeric inputs (a missing value where training had none counts as far)."""

    def __init__(self, profile: Profile | None) -> None:
        numeric = numeric_features(profile)
        self._columns = [
            (i, float(f.mean), float(f.std))
            for i, f in enumerate(numeric)
            if f.std and f.mean is not None
        ]

    def scores(self, rows: list[list[float]]) -> list[float]:
        """One score per row of :func:`numeric_rows`."""
        if not self._columns:
            return [0.0] * len(rows)
        scores = []
        for row in rows:
            worst = 0.0
            for index, mean, std in self._columns:
                z = abs(row[index] - mean) / std
                if not z <= worst:  # NaN counts as far
                    worst = math.inf if z != z else z
            scores.append(worst)
        return scores
