"""Poisoning screening: rows a training set should not trust, and why.

Detectors, each reporting the rows it flags:

* ``label_issue``: confident learning (cleanlab) on out-of-fold predicted probabilities of
  a gradient-boosting model: rows whose given label the rest of the data contradicts
  (random or targeted label flips);
* ``trigger``: backdoor patterns: a rare value or pair of values whose rows almost all carry
  one label *and* whose label a model only predicts because of that pattern (permuting the
  pattern's columns flips most of its predictions), which natural predictive values do not;
* ``out_of_range``: values outside what a trusted reference dataset holds (numbers beyond
  its range by a margin, categories it never had);
* ``outlier``: the most isolated rows by an isolation forest (a small, fixed share);
* ``duplicate``: exact repeats of an earlier row, and rows identical in every feature to an
  earlier row but with another label;
* ``unknown_source``: rows whose source column names a source not in provenance.

The report also compares class balance and each feature's distribution with the reference.
The cleaned dataset drops flagged rows or gives them a weight, per policy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import IntegrityError, UsageError

# Numeric columns with at most this many distinct values are treated as categories when
# looking for trigger patterns; others are cut into deciles.
_DISCRETE = 20
DETECTORS = ("label_issue", "trigger", "out_of_range", "outlier", "duplicate", "unknown_source")


@dataclass(frozen=True)
class ScreeningPolicy:
    """How to screen and what to do with flagged rows."""

    label: str
    action: Literal["remove", "downweight"] = "remove"
    weight: float = 0.0
    weight_column: str = "sample_weight"
    max_flagged_share: float | None = None
    detectors: tuple[str, ...] = DETECTORS
    folds: int = 5
    outlier_share: float = 0.002
    duplicate_share: float = 0.01
    range_margin: float = 0.1
    trigger_min_support: int = 10
    trigger_max_share: float = 0.03
    trigger_purity: float = 0.9
    trigger_flip_rate: float = 0.5
    source_column: str | None = None
    allowed_sources: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class ScreeningReport:
    """Flagged rows by detector, and how the dataset compares with the reference."""

    rows: int
    flagged: dict[str, list[Any]] = field(default_factory=dict)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    shift: dict[str, Any] = field(default_factory=dict)
    action: str = "remove"

    @property
    def flagged_rows(self) -> list[Any]:
        seen: dict[Any, None] = {}
        for rows in self.flagged.values():
            seen.update(dict.fromkeys(rows))
        return list(seen)

    @property
    def flagged_share(self) -> float:
        return len(self.flagged_rows) / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "flagged_share": round(self.flagged_share, 6),
            "flagged": {k: {"count": len(v), "rows": v} for k, v in self.flagged.items()},
            "triggers": self.triggers,
            "balance": self.balance,
            "shift": self.shift,
            "action": self.action,
        }


class ScreeningGateError(IntegrityError):
    """The flagged share exceeds the policy's threshold."""


def _features(frame: Any, label: str) -> Any:
    """Model-ready features: strings become categories; numbers stay numbers."""
    import pandas as pd

    features = frame.drop(columns=[label])
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(
            features[column]
        ):
            values = features[column].astype("string").to_numpy(dtype=object, na_value=np.nan)
            features[column] = pd.Categorical(values)
    return features


def _model(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.1, categorical_features="from_dtype", random_state=seed
    )


def _encoded_labels(series: Any) -> tuple[np.ndarray[Any, Any], list[Any]]:
    classes = sorted(series.dropna().unique().tolist(), key=str)
    if len(classes) < 2:
        raise UsageError("screening needs at least two label classes")
    lookup = {value: index for index, value in enumerate(classes)}
    return series.map(lookup).to_numpy(), classes


def _linear(features: Any) -> Any:
    """A one-hot logistic regression: a second, differently biased opinion."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in features.columns if str(features[c].dtype) == "category"]
    numeric = [c for c in features.columns if c not in categorical]
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ]
    )  # fmt: skip
    return make_pipeline(encode, LogisticRegression(max_iter=2000))


def _label_issues(features: Any, labels: np.ndarray[Any, Any], policy: ScreeningPolicy) -> Any:
    """Confident learning on the average of two models' out-of-fold probabilities (an
    ensemble is better calibrated than either, which is what confident learning needs)."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(policy.folds, shuffle=True, random_state=policy.seed)
    linear_features = features.copy()
    for column in linear_features.columns:
        if str(linear_features[column].dtype) == "category":
            values = linear_features[column].astype("string").fillna("<na>")
            linear_features[column] = values.to_numpy(dtype=object)
    boosted = cross_val_predict(
        _model(policy.seed), features, labels, cv=folds, method="predict_proba"
    )
    linear = cross_val_predict(
        _linear(features), linear_features, labels, cv=folds, method="predict_proba"
    )
    probabilities = (boosted + linear) / 2
    return find_label_issues(labels, probabilities, filter_by="confident_learning"), probabilities


def _candidate_groups(
    frame: Any, features: Any, policy: ScreeningPolicy
) -> list[tuple[tuple[str, ...], Any]]:
    """Rare single values and pairs of values whose rows nearly all share one label."""
    import pandas as pd

    codes: dict[str, np.ndarray[Any, Any]] = {}
    sizes: dict[str, int] = {}
    for column in features.columns:
        series = features[column]
        if not isinstance(series.dtype, pd.CategoricalDtype) and series.nunique() > _DISCRETE:
            series = pd.qcut(series.rank(method="dense"), 10, duplicates="drop")
        values, uniques = pd.factorize(series, use_na_sentinel=False)
        codes[column], sizes[column] = values.astype(np.int64), len(uniques)
    labels, _ = _encoded_labels(frame[policy.label])
    classes = int(labels.max()) + 1
    limit = max(policy.trigger_min_support, int(policy.trigger_max_share * len(frame)))
    found = []
    columns = list(features.columns)
    for group in [*((c,) for c in columns), *itertools.combinations(columns, 2)]:
        keys = (
            codes[group[0]]
            if len(group) == 1
            else codes[group[0]] * sizes[group[1]] + codes[group[1]]
        )
        table = np.zeros((int(keys.max()) + 1, classes), dtype=np.int64)
        np.add.at(table, (keys, labels), 1)
        support = table.sum(axis=1)
        purity = table.max(axis=1) / np.maximum(support, 1)
        rare = (support >= policy.trigger_min_support) & (support <= limit)
        for key in np.flatnonzero(rare & (purity >= policy.trigger_purity)):
            found.append((group, features.index[keys == key]))
    return found


def _triggers(
    frame: Any,
    features: Any,
    labels: np.ndarray[Any, Any],
    policy: ScreeningPolicy,
    report: ScreeningReport,
) -> list[Any]:
    """Rows of rare, pure patterns that alone make the model predict their label.

    All candidates are tested in one batch: each candidate's rows are copied with the
    pattern's columns replaced by values drawn from other rows, and the model predicts the
    originals and the copies once.
    """
    candidates = _candidate_groups(frame, features, policy)
    if not candidates:
        return []
    model = _model(policy.seed).fit(features, labels)
    predicted = model.predict(features)
    rng = np.random.default_rng(policy.seed)
    positions = [features.index.get_indexer(rows) for _, rows in candidates]
    donors = [rng.integers(0, len(features), size=len(where)) for where in positions]
    counterfactual = model.predict(_swapped(features, candidates, positions, donors))
    flagged: list[Any] = []
    start = 0
    for (columns, rows), where in zip(candidates, positions, strict=True):
        after = counterfactual[start : start + len(where)]
        start += len(where)
        majority = np.bincount(labels[where]).argmax()
        keep = predicted[where] == majority
        if keep.mean() < 0.5:
            continue
        flips = float((after != majority)[keep].mean())
        if flips >= policy.trigger_flip_rate:
            flagged.extend(rows.tolist())
            report.triggers.append(
                {
                    "columns": list(columns),
                    "values": [str(features[c].iloc[where[0]]) for c in columns],
                    "rows": len(rows),
                    "flip_rate": round(flips, 3),
                }
            )
    return list(dict.fromkeys(flagged))


def _swapped(
    features: Any,
    candidates: list[tuple[tuple[str, ...], Any]],
    positions: list[np.ndarray[Any, Any]],
    donors: list[np.ndarray[Any, Any]],
) -> Any:
    """Every candidate's rows, one after another, with the candidate's pattern columns
    taken from its donor rows: one take per column (a frame per candidate, then a concat,
    costs seconds for the thousand-odd candidates of a census table)."""
    import pandas as pd

    originals = np.concatenate(positions)
    ends = np.cumsum([len(where) for where in positions])
    columns: dict[str, Any] = {}
    for column in features.columns:
        take = originals.copy()
        for (pattern, _), donor, end in zip(candidates, donors, ends, strict=True):
            if column in pattern:
                take[end - len(donor) : end] = donor
        columns[column] = features[column].array.take(take)
    return pd.DataFrame(columns)


def _out_of_range(frame: Any, reference: Any, policy: ScreeningPolicy) -> list[Any]:
    import pandas as pd

    bad = pd.Series(False, index=frame.index)
    for column in frame.columns:
        if column == policy.label or column not in reference.columns:
            continue
        series, trusted = frame[column], reference[column]
        if pd.api.types.is_numeric_dtype(series) and pd.api.types.is_numeric_dtype(trusted):
            low, high = float(trusted.min()), float(trusted.max())
            margin = policy.range_margin * (high - low)
            bad |= (series < low - margin) | (series > high + margin)
        else:
            known = set(trusted.dropna().astype(str))
            bad |= series.notna() & ~series.astype(str).isin(known)
    rows: list[Any] = frame.index[bad].tolist()
    return rows


def _outliers(features: Any, policy: ScreeningPolicy) -> list[Any]:
    from sklearn.ensemble import IsolationForest

    if policy.outlier_share <= 0:
        return []
    encoded = features.copy()
    for column in encoded.columns:
        if str(encoded[column].dtype) == "category":
            encoded[column] = encoded[column].cat.codes
    encoded = encoded.fillna(-1)
    forest = IsolationForest(contamination=policy.outlier_share, random_state=policy.seed)
    marks = forest.fit_predict(encoded)
    rows: list[Any] = features.index[marks == -1].tolist()
    return rows


def _normalised(frame: Any) -> Any:
    """Rows as a near-duplicate detector sees them: numbers to three significant digits,
    text trimmed and lower-cased."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            out[column] = series.map(lambda v: f"{v:.3g}" if v == v else "<na>")
        else:
            out[column] = series.astype("string").str.strip().str.lower().fillna("<na>")
    return out


def _duplicates(frame: Any, policy: ScreeningPolicy, report: ScreeningReport) -> list[Any]:
    """Exact repeats of earlier rows, and near repeats (equal after rounding numbers to three
    significant digits and normalising text). Where repeats are common (coarse features, as
    in many tabular datasets) they are a property of the data, not an injection: reported
    only."""
    exact = frame.duplicated(keep="first")
    near = _normalised(frame).duplicated(keep="first") & ~exact
    repeats = exact | near
    share = float(repeats.mean()) if len(frame) else 0.0
    report.balance["duplicate_share"] = round(share, 4)
    report.balance["near_duplicates"] = int(near.sum())
    if share > policy.duplicate_share:
        return []
    rows: list[Any] = frame.index[repeats].tolist()
    return rows


def _balance_and_shift(
    frame: Any, reference: Any, policy: ScreeningPolicy
) -> tuple[dict[str, Any], dict[str, Any]]:
    import pandas as pd
    from scipy import stats

    labels = frame[policy.label].astype(str).value_counts(normalize=True)
    balance: dict[str, Any] = {"labels": {k: round(float(v), 4) for k, v in labels.items()}}
    shift: dict[str, Any] = {}
    if reference is None:
        return balance, shift
    trusted = reference[policy.label].astype(str).value_counts(normalize=True)
    balance["reference"] = {k: round(float(v), 4) for k, v in trusted.items()}
    balance["max_change"] = round(
        float(
            labels.reindex(trusted.index.union(labels.index), fill_value=0)
            .sub(trusted.reindex(trusted.index.union(labels.index), fill_value=0))
            .abs()
            .max()
        ),
        4,
    )
    for column in frame.columns:
        if column == policy.label or column not in reference.columns:
            continue
        series, base = frame[column].dropna(), reference[column].dropna()
        if pd.api.types.is_numeric_dtype(series) and pd.api.types.is_numeric_dtype(base):
            result = stats.ks_2samp(series, base)
            shift[column] = {
                "test": "ks",
                "statistic": round(float(result.statistic), 4),
                "p_value": float(result.pvalue),
            }
        else:
            levels = sorted(set(series.astype(str)) | set(base.astype(str)))
            observed = series.astype(str).value_counts().reindex(levels, fill_value=0)
            expected = base.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0)
            psi_a = (observed / max(len(series), 1)).clip(lower=1e-6)
            psi_b = expected.clip(lower=1e-6)
            psi = float(((psi_a - psi_b) * np.log(psi_a / psi_b)).sum())
            shift[column] = {"test": "psi", "statistic": round(psi, 4)}
    return balance, shift


def screen(
    frame: Any, policy: ScreeningPolicy, reference: Any | None = None
) -> tuple[ScreeningReport, Any]:
    """Screen *frame*; returns the report and the cleaned dataset (flagged rows removed, or
    kept with a weight). Raises ScreeningGateError when the flagged share exceeds the policy's
    ``max_flagged_share``."""
    if policy.label not in frame.columns:
        raise UsageError(f"no label column {policy.label!r}")
    unknown = [d for d in policy.detectors if d not in DETECTORS]
    if unknown:
        raise UsageError(f"unknown detector {unknown[0]!r}; use {', '.join(DETECTORS)}")
    frame = frame[frame[policy.label].notna()]
    report = ScreeningReport(rows=len(frame), action=policy.action)
    features = _features(frame, policy.label)
    if policy.source_column and policy.source_column in features.columns:
        features = features.drop(columns=[policy.source_column])
    labels, _ = _encoded_labels(frame[policy.label])
    if "label_issue" in policy.detectors:
        issues, _ = _label_issues(features, labels, policy)
        report.flagged["label_issue"] = frame.index[issues].tolist()
    if "trigger" in policy.detectors:
        report.flagged["trigger"] = _triggers(frame, features, labels, policy, report)
    if "out_of_range" in policy.detectors and reference is not None:
        report.flagged["out_of_range"] = _out_of_range(frame, reference, policy)
    if "outlier" in policy.detectors:
        report.flagged["outlier"] = _outliers(features, policy)
    if "duplicate" in policy.detectors:
        report.flagged["duplicate"] = _duplicates(frame, policy, report)
    if "unknown_source" in policy.detectors and policy.source_column:
        column = frame[policy.source_column].astype(str)
        report.flagged["unknown_source"] = frame.index[
            ~column.isin(policy.allowed_sources)
        ].tolist()
    balance, report.shift = _balance_and_shift(frame, reference, policy)
    report.balance.update(balance)
    flagged = report.flagged_rows
    if policy.action == "remove":
        cleaned = frame.drop(index=flagged)
    else:
        cleaned = frame.copy()
        cleaned[policy.weight_column] = 1.0
        cleaned.loc[flagged, policy.weight_column] = policy.weight
    if policy.max_flagged_share is not None and report.flagged_share > policy.max_flagged_share:
        raise ScreeningGateError(
            f"screening flagged {report.flagged_share:.1%} of rows, over the "
            f"{policy.max_flagged_share:.1%} the policy allows"
        )
    return report, cleaned
