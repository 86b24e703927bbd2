"""Group fairness of a classifier (fairlearn), and mitigations at training time.

For each sensitive attribute, and for their intersection when there are several, the
report gives per group the selection rate, true-positive and false-positive rates, and
the gaps that fairness policies bound: demographic-parity difference and ratio and
equalised-odds difference, each with a bootstrap confidence interval. ``metrics()``
flattens the worst gap over all attributes into the names gates use.

Mitigations: ``reweighing`` (Kamiran & Calders: sample weights that make label and group
independent; the model stays an ordinary estimator), ``exponentiated_gradient`` (fairlearn's
reductions approach) and ``threshold_optimizer`` (group-specific thresholds; it needs the
sensitive attribute at prediction time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

MITIGATIONS = ("reweighing", "exponentiated_gradient", "threshold_optimizer")
CONSTRAINTS = ("demographic_parity", "equalized_odds")
INTERSECTION = " & "


@dataclass
class AttributeFairness:
    """The fairness of predictions across the groups of one attribute."""

    attribute: str
    groups: list[dict[str, Any]]
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float
    intervals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class FairnessReport:
    """Per-attribute fairness; the worst values are what gates check."""

    attributes: list[AttributeFairness]
    confidence: float

    def metrics(self) -> dict[str, float]:
        """The worst gap over every attribute (and the intersection), for gates."""
        return {
            "fairness.demographic_parity_difference": max(
                a.demographic_parity_difference for a in self.attributes
            ),
            "fairness.demographic_parity_ratio": min(
                a.demographic_parity_ratio for a in self.attributes
            ),
            "fairness.equalized_odds_difference": max(
                a.equalized_odds_difference for a in self.attributes
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "metrics": self.metrics(),
            "attributes": [a.to_dict() for a in self.attributes],
        }


def _columns(sensitive: Any) -> Any:
    import pandas as pd

    frame = sensitive if isinstance(sensitive, pd.DataFrame) else pd.DataFrame(sensitive)
    if frame.shape[1] == 0:
        raise UsageError("at least one sensitive attribute is needed")
    return frame.astype(str).reset_index(drop=True)


def assess(
    y_true: Any,
    y_pred: Any,
    sensitive: Any,
    *,
    positive: Any = 1,
    n_boot: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
) -> FairnessReport:
    """Fairness of binary predictions *y_pred* against *y_true* for every column of
    *sensitive* and, with two or more, their intersection."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    truth = (np.asarray(y_true) == positive).astype(float)
    predicted = (np.asarray(y_pred) == positive).astype(float)
    frame = _columns(sensitive)
    if len(frame) != len(truth) or len(truth) != len(predicted):
        raise UsageError("labels, predictions and sensitive attributes differ in length")
    if len(frame.columns) > 1:
        frame[INTERSECTION.join(map(str, frame.columns))] = frame.astype(str).agg(
            INTERSECTION.join, axis=1
        )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(truth), size=(n_boot, len(truth))) if n_boot > 0 else None
    results = []
    for attribute in frame.columns:
        metrics = MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
                "count": count,
            },
            y_true=truth,
            y_pred=predicted,
            sensitive_features=frame[attribute],
        )
        groups = [
            {"group": str(group), **{k: _number(v) for k, v in row.items()}}
            for group, row in metrics.by_group.iterrows()
        ]
        difference, ratio = metrics.difference(), metrics.ratio()
        intervals = (
            _bootstrap(truth, predicted, frame[attribute], draws, confidence)
            if draws is not None
            else {}
        )
        results.append(
            AttributeFairness(
                attribute=str(attribute),
                groups=groups,
                demographic_parity_difference=_number(difference["selection_rate"]),
                demographic_parity_ratio=_number(ratio["selection_rate"]),
                equalized_odds_difference=max(
                    _number(difference["true_positive_rate"]),
                    _number(difference["false_positive_rate"]),
                ),
                intervals=intervals,
            )
        )
    return FairnessReport(results, confidence)


def _bootstrap(
    truth: Any, predicted: Any, groups: Any, draws: Any, confidence: float
) -> dict[str, list[float]]:
    """Percentile intervals of the three gaps over bootstrap resamples of the rows
    (vectorised: fairlearn's own bootstrap recomputes a MetricFrame per resample, which
    takes seconds per attribute)."""
    import numpy as np

    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    size = int(codes.max()) + 1
    offsets = np.arange(draws.shape[0])[:, None] * size
    bins = (codes[draws] + offsets).ravel()

    def per_group(weights: Any) -> Any:
        sums = np.bincount(bins, weights=weights[draws].ravel(), minlength=size * draws.shape[0])
        return sums.reshape(draws.shape[0], size)

    ones = np.ones_like(truth, dtype=float)
    rows, positives, negatives = per_group(ones), per_group(truth * 1.0), per_group(1.0 - truth)
    with np.errstate(invalid="ignore", divide="ignore"):
        selection = per_group(predicted * 1.0) / rows
        tpr = per_group(predicted * truth * 1.0) / positives
        fpr = per_group(predicted * (1.0 - truth)) / negatives

    def gap(rates: Any) -> Any:
        return np.nanmax(rates, axis=1) - np.nanmin(rates, axis=1)

    dp = gap(selection)
    ratios = np.nanmin(selection, axis=1) / np.nanmax(selection, axis=1)
    eo = np.fmax(gap(tpr), gap(fpr))
    tail = 100 * (1 - confidence) / 2

    def interval(values: Any) -> list[float]:
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        return [_number(low), _number(high)]

    return {
        "demographic_parity_difference": interval(dp),
        "demographic_parity_ratio": interval(ratios),
        "equalized_odds_difference": interval(eo),
    }


def _number(value: Any) -> float:
    number = float(value)
    return 0.0 if number != number else round(number, 6)  # NaN (an empty group) counts as no gap


def reweighing_weights(labels: Any, groups: Any) -> Any:
    """Kamiran-Calders weights ``P(group) P(label) / P(group, label)``: under them, label and
    group are independent in the training data."""
    import pandas as pd

    frame = pd.DataFrame(
        {"y": list(labels), "g": _columns(groups).astype(str).agg("|".join, axis=1)}
    )
    p_group = frame["g"].map(frame["g"].value_counts(normalize=True))
    p_label = frame["y"].map(frame["y"].value_counts(normalize=True))
    p_joint = frame.groupby(["g", "y"])["y"].transform("size") / len(frame)
    return (p_group * p_label / p_joint).to_numpy()


def mitigate(
    estimator: Any,
    features: Any,
    labels: Any,
    sensitive: Any,
    *,
    method: str = "reweighing",
    constraint: str = "demographic_parity",
) -> Any:
    """Fit *estimator* with a fairness mitigation; returns the fitted model.

    ``reweighing`` passes sample weights to ``fit`` (to the last step of a Pipeline);
    ``exponentiated_gradient`` and ``threshold_optimizer`` return fairlearn models (the
    latter needs ``sensitive_features=`` when predicting).
    """
    if method not in MITIGATIONS:
        raise UsageError(f"mitigation must be one of {', '.join(MITIGATIONS)}")
    if constraint not in CONSTRAINTS:
        raise UsageError(f"constraint must be one of {', '.join(CONSTRAINTS)}")
    if method == "reweighing":
        weights = reweighing_weights(labels, sensitive)
        steps = getattr(estimator, "steps", None)
        key = f"{steps[-1][0]}__sample_weight" if steps else "sample_weight"
        return estimator.fit(features, labels, **{key: weights})
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

    groups = _columns(sensitive).agg("|".join, axis=1)
    if method == "exponentiated_gradient":
        moment = DemographicParity() if constraint == "demographic_parity" else EqualizedOdds()
        model = ExponentiatedGradient(estimator, constraints=moment)
        model.fit(features, labels, sensitive_features=groups)
        return model
    optimiser = ThresholdOptimizer(
        estimator=estimator, constraints=constraint, predict_method="auto", prefit=False
    )
    optimiser.fit(features, labels, sensitive_features=groups)
    return optimiser
