"""A verified model ready to serve: its schema, its outputs per policy, its explanations."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from ..data.profile import Profile
from .schema import OodScorer, RequestSchema, numeric_features, numeric_rows, request_schema

_thread = threading.local()


def _assume_finite(value: bool) -> None:
    """scikit-learn's ``assume_finite`` for this thread, set only when it changes
    (``config_context`` on every request costs more than a small model's prediction)."""
    if getattr(_thread, "assume_finite", None) is not value:
        sklearn.set_config(assume_finite=value)
        _thread.assume_finite = value


@dataclass(frozen=True)
class Inference:
    """What the model said about a batch, before any output policy."""

    labels: list[Any]
    probabilities: Any | None  # n x classes, or None


@dataclass(frozen=True)
class ServedModel:
    """One registered version, loaded after every check passed."""

    name: str
    version: int
    artifact_id: str
    model: Any
    schema: RequestSchema
    ood: OodScorer
    profile: Profile | None
    takes_array: bool = False  # all inputs numeric and the model accepts them as one array
    finite: bool = False  # the schema admits no missing value, so inputs are always finite

    @classmethod
    def build(
        cls,
        name: str,
        version: int,
        artifact_id: str,
        model: Any,
        profile: Profile | None,
        *,
        max_batch: int,
        margin: float,
    ) -> ServedModel:
        schema = request_schema(
            profile,
            n_features=getattr(model, "n_features_in_", None),
            max_batch=max_batch,
            margin=margin,
        )
        served = cls(name, version, artifact_id, model, schema, OodScorer(profile), profile)
        finite = profile is None or all(f.missing_rate == 0 for f in profile.features)
        return replace(served, takes_array=served._accepts_array(), finite=finite)

    def _accepts_array(self) -> bool:
        """True when every input is numeric and the model gives the same answer for a plain
        array in schema order as for a DataFrame. Building a DataFrame and validating it
        costs more than many models' prediction, so such models get the array."""
        features = self.schema.features
        if features is None or self.profile is None:
            return False
        numeric = numeric_features(self.profile)
        if [f.name for f in numeric] != list(features) or any(not f.deciles for f in numeric):
            return False
        probe = [{f.name: f.deciles[4] for f in numeric}, {f.name: f.deciles[0] for f in numeric}]
        try:
            expected = np.asarray(self.model.predict(self.schema.frame(probe)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                actual = np.asarray(self.model.predict(self.numeric(probe)))
        except Exception:  # any failure means the model needs its DataFrame
            return False
        if not np.array_equal(expected, actual):
            return False
        # Fitted on a DataFrame, scikit-learn warns on every array; the schema has already
        # put the columns in the fitted order, so the warning says nothing here.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return True

    def numeric(self, instances: list[Any]) -> list[list[float]]:
        """The numeric inputs of validated *instances* (see :func:`numeric_rows`)."""
        if self.schema.features is None:
            return [[float(v) for v in i] for i in instances]
        return numeric_rows(instances, self.numeric_names)

    def inputs(self, instances: list[Any], numeric: list[list[float]]) -> Any:
        """What the model is given for validated *instances* (*numeric*: their rows)."""
        if self.schema.features is None or self.takes_array:
            return np.array(numeric, dtype="float64")
        return self.schema.frame(instances)

    @cached_property
    def numeric_names(self) -> list[str]:
        return [f.name for f in numeric_features(self.profile)]

    @cached_property
    def classes(self) -> list[Any] | None:
        """The class labels of a classifier with probabilities (else None)."""
        classes = getattr(self.model, "classes_", None)
        if classes is None or not hasattr(self.model, "predict_proba"):
            return None
        return list(np.asarray(classes).tolist())

    def infer(self, frame: Any) -> Inference:
        """Labels and (for classifiers) class probabilities, from one model call.

        When the schema guarantees finite inputs, scikit-learn's own finiteness checks
        (a third of a small model's prediction time) are skipped.
        """
        _assume_finite(self.finite)
        classes = self.classes
        if classes is not None:
            probabilities = self.model.predict_proba(frame)
            labels = [classes[i] for i in np.argmax(probabilities, axis=1).tolist()]
            return Inference(labels, probabilities)
        return Inference(np.asarray(self.model.predict(frame)).tolist(), None)

    def explain(self, frame: Any) -> list[dict[str, float]]:
        """Per instance, how much the predicted class's probability drops when each input
        is replaced by its typical training value (occlusion); needs a profile."""
        if self.profile is None or not isinstance(frame, pd.DataFrame):
            raise ValueError("this model has no feature profile to explain against")
        typical: dict[str, Any] = {}
        for feature in self.profile.features:
            if feature.kind == "category" and feature.categories:
                typical[feature.name] = max(feature.categories, key=feature.categories.__getitem__)
            elif feature.deciles:
                value = feature.deciles[4]
                typical[feature.name] = round(value) if feature.kind == "integer" else value
        names = [n for n in frame.columns if n in typical]
        base = self.infer(frame)
        if base.probabilities is None:
            raise ValueError("this model gives no probabilities to explain")
        chosen = np.argmax(base.probabilities, axis=1)
        variants = []
        for name in names:
            changed = frame.copy()
            changed[name] = typical[name]
            variants.append(changed)
        stacked = self.model.predict_proba(pd.concat(variants, ignore_index=True))
        rows = np.arange(len(frame))
        result: list[dict[str, float]] = [{} for _ in rows]
        for index, name in enumerate(names):
            block = stacked[index * len(frame) : (index + 1) * len(frame)]
            drops = base.probabilities[rows, chosen] - block[rows, chosen]
            for row in rows:
                result[row][name] = float(drops[row])
        return result
