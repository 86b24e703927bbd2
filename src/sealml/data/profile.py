"""A reference profile of the data a model was trained on: per feature its type, range,
moments, deciles, categories with their frequencies and missing rate.

Sealed beside every registered version; serving derives its request schema and
out-of-distribution score from it, and monitoring compares live traffic with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "sealml/feature-profile/v1"
MAX_CATEGORIES = 1000
Kind = Literal["integer", "number", "boolean", "category"]


@dataclass(frozen=True)
class FeatureProfile:
    """One feature as the training data shows it."""

    name: str
    kind: Kind
    missing_rate: float
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    deciles: tuple[float, ...] = ()
    categories: dict[str, float] = field(default_factory=dict)  # category -> share

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "deciles": list(self.deciles)}


@dataclass(frozen=True)
class Profile:
    """Every model input, in the order the model takes them."""

    rows: int
    features: tuple[FeatureProfile, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("format") != FORMAT:
            raise ValueError("not a sealml feature profile")
        features = tuple(
            FeatureProfile(
                **{**item, "deciles": tuple(item.get("deciles", ())), "kind": item["kind"]}
            )
            for item in data["features"]
        )
        return cls(int(data["rows"]), features)


def _kind(column: pd.Series) -> Kind:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_integer_dtype(column):
        return "integer"
    if pd.api.types.is_numeric_dtype(column):
        return "number"
    return "category"


def profile_feature(column: pd.Series) -> FeatureProfile:
    """The profile of one column."""
    name = str(column.name)
    kind = _kind(column)
    missing = float(column.isna().mean()) if len(column) else 0.0
    present = column.dropna()
    if kind in ("integer", "number") and len(present):
        values = present.to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if not len(finite):
            return FeatureProfile(name, kind, missing)
        return FeatureProfile(
            name,
            kind,
            missing,
            minimum=float(finite.min()),
            maximum=float(finite.max()),
            mean=float(finite.mean()),
            std=float(finite.std()),
            deciles=tuple(float(q) for q in np.quantile(finite, np.linspace(0.1, 0.9, 9))),
        )
    if kind == "category":
        shares = present.astype(str).value_counts(normalize=True)
        top = shares.head(MAX_CATEGORIES)
        return FeatureProfile(
            name, kind, missing, categories={str(k): float(v) for k, v in top.items()}
        )
    return FeatureProfile(name, kind, missing)


def profile_frame(frame: pd.DataFrame, features: Iterable[str] | None = None) -> Profile:
    """The profile of *features* (default: every column) of *frame*."""
    names = list(features) if features is not None else [str(c) for c in frame.columns]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise KeyError(f"the data lacks the model inputs {', '.join(missing)}")
    return Profile(len(frame), tuple(profile_feature(frame[n]) for n in names))
