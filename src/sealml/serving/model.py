"""A verified model ready to serve: its schema, its outputs per policy, its explanations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.profile import Profile
from .schema import OodScorer, RequestSchema, request_schema


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
        return cls(name, version, artifact_id, model, schema, OodScorer(profile), profile)

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else np.asarray(classes).tolist()

    def infer(self, frame: Any) -> Inference:
        """Labels and (for classifiers) class probabilities, from one model call."""
        classes = getattr(self.model, "classes_", None)
        if classes is not None and hasattr(self.model, "predict_proba"):
            probabilities = self.model.predict_proba(frame)
            labels = np.asarray(classes)[np.argmax(probabilities, axis=1)]
            return Inference(labels.tolist(), probabilities)
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
