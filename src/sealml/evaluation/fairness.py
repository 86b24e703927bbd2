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

import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

MITIGATIONS = ("reweighing", "exponentiated_gradient", "threshold_optimizer")
CONSTRAINTS = ("demographic_parity", "equalized_odds")
INTERSECTION = " & "
DEFAULT_MIN_GROUP_SIZE = 30
"""Rows a rate must rest on to enter the gaps (see :func:`assess`)."""


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
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> FairnessReport:
    """Fairness of binary predictions *y_pred* against *y_true* for every column of
    *sensitive* and, with two or more, their intersection.

    A rate enters the gaps only when it rests on at least *min_group_size* rows: the
    selection rate on the group's rows, the true-positive rate on its positives, the
    false-positive rate on its negatives. Every group is still listed with its rates and
    counts; a rate estimated from a handful of rows (a small intersection) is noise, and
    a gate on it would fail or pass by chance."""
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
        codes, names = _codes(frame[attribute])
        counted = _counted(truth, codes, len(names), min_group_size)
        by_group = metrics.by_group
        groups = []
        for index, name in enumerate(names):
            row = by_group.loc[name]
            entry = {"group": str(name), **{k: _number(v) for k, v in row.items()}}
            entry["counted"] = [rate for rate, mask in counted.items() if mask[index]]
            groups.append(entry)
        rates = {
            rate: np.array([by_group.loc[name, rate] for name in names], dtype=float)
            for rate in counted
        }
        gaps = _gaps(
            {rate: np.where(counted[rate], rates[rate], np.nan)[None, :] for rate in rates}
        )
        intervals = (
            _bootstrap(truth, predicted, codes, len(names), counted, draws, confidence)
            if draws is not None
            else {}
        )
        results.append(
            AttributeFairness(
                attribute=str(attribute),
                groups=groups,
                demographic_parity_difference=_number(gaps["demographic_parity_difference"][0]),
                demographic_parity_ratio=_number(gaps["demographic_parity_ratio"][0]),
                equalized_odds_difference=_number(gaps["equalized_odds_difference"][0]),
                intervals=intervals,
            )
        )
    return FairnessReport(results, confidence)


def _codes(groups: Any) -> tuple[Any, list[Any]]:
    """Each row's group index, and the groups in fairlearn's (sorted) order."""
    import numpy as np

    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    return codes, list(names)


def _counted(truth: Any, codes: Any, size: int, minimum: int) -> dict[str, Any]:
    """Per rate, which groups have enough rows behind it to enter the gaps."""
    import numpy as np

    rows = np.bincount(codes, minlength=size)
    positives = np.bincount(codes, weights=truth, minlength=size)
    return {
        "selection_rate": rows >= minimum,
        "true_positive_rate": positives >= minimum,
        "false_positive_rate": (rows - positives) >= minimum,
    }


def _gaps(rates: dict[str, Any]) -> dict[str, Any]:
    """The three gaps from per-group rates (rows: resamples; NaN: not counted). Fewer than
    two counted groups give no gap."""
    import numpy as np

    def spread(values: Any) -> Any:
        return np.nan_to_num(np.nanmax(values, axis=1) - np.nanmin(values, axis=1))

    selection = rates["selection_rate"]
    # All-NaN rows (no group counted) are expected here: they mean no gap.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "demographic_parity_difference": spread(selection),
            "demographic_parity_ratio": np.nan_to_num(
                np.nanmin(selection, axis=1) / np.nanmax(selection, axis=1), nan=1.0
            ),
            "equalized_odds_difference": np.fmax(
                spread(rates["true_positive_rate"]), spread(rates["false_positive_rate"])
            ),
        }


def _bootstrap(
    truth: Any,
    predicted: Any,
    codes: Any,
    size: int,
    counted: dict[str, Any],
    draws: Any,
    confidence: float,
) -> dict[str, list[float]]:
    """Percentile intervals of the three gaps over bootstrap resamples of the rows, over
    the same groups as the point estimate (vectorised: fairlearn's own bootstrap
    recomputes a MetricFrame per resample, which takes seconds per attribute)."""
    import numpy as np

    offsets = np.arange(draws.shape[0])[:, None] * size
    bins = (codes[draws] + offsets).ravel()

    def per_group(weights: Any) -> Any:
        sums = np.bincount(bins, weights=weights[draws].ravel(), minlength=size * draws.shape[0])
        return sums.reshape(draws.shape[0], size)

    ones = np.ones_like(truth, dtype=float)
    rows, positives, negatives = per_group(ones), per_group(truth * 1.0), per_group(1.0 - truth)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "selection_rate": per_group(predicted * 1.0) / rows,
            "true_positive_rate": per_group(predicted * truth * 1.0) / positives,
            "false_positive_rate": per_group(predicted * (1.0 - truth)) / negatives,
        }
    gaps = _gaps({rate: np.where(counted[rate][None, :], rates[rate], np.nan) for rate in rates})
    tail = 100 * (1 - confidence) / 2

    def interval(values: Any) -> list[float]:
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        return [_number(low), _number(high)]

    return {name: interval(values) for name, values in gaps.items()}


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
