"""Per-column drift between a reference sample and a current one, vectorised with NumPy.

Two modes:

* ``evidently``: the statistics and thresholds of Evidently's data-drift preset for more
  than 1,000 reference rows, so verdicts and scores can be compared one to one: numeric
  columns with more than five distinct values get the Wasserstein distance divided by the
  reference's standard deviation (at least 0.001), drifted at >= 0.1; other columns get
  the Jensen-Shannon distance between their value frequencies, drifted at >= 0.1.
* ``default``: a significance test per column (Kolmogorov-Smirnov for numbers, chi-square
  for categories), Benjamini-Hochberg corrected over the columns tested together, and an
  effect large enough to matter (normed Wasserstein >= 0.1 for numbers, Jensen-Shannon
  distance >= 0.05 for categories). The distance thresholds alone miss a ten-point shift of
  a common category (its Jensen-Shannon distance is below 0.1); significance alone flags
  negligible differences in large samples.

Every column also gets its population stability index (PSI) over the reference deciles or
categories, reported, not judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Mode = Literal["default", "evidently"]
Kind = Literal["numeric", "categorical"]

DISTANCE_THRESHOLD = 0.1  # Evidently's, for both distances
CATEGORY_EFFECT = 0.05  # default mode: Jensen-Shannon distance that matters
ALPHA = 0.01  # default mode: false discovery rate over the columns of one run
KS_BINS = 1000  # default mode: KS on reference-quantile bins (D within 1/KS_BINS)
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class ColumnDrift:
    """One column's comparison."""

    column: str
    kind: Kind
    statistic: str  # what `score` is
    score: float
    threshold: float
    drifted: bool
    p_value: float | None = None  # default mode
    p_adjusted: float | None = None
    psi: float | None = None
    reference_missing: float = 0.0
    current_missing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class DriftReport:
    mode: Mode
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drifted": self.drifted,
            "columns": [c.to_dict() for c in self.columns],
        }


# -- numbers ------------------------------------------------------------------------------


def _finite(column: pd.Series) -> Any:
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def wasserstein_sorted(u: Any, v: Any) -> float:
    """The first Wasserstein distance between two samples given sorted: the area between
    their quantile functions. Equal sizes pair the order statistics; otherwise the
    quantile breakpoints i/n and j/m are merged in closed form (integer arithmetic, no
    sort), so either way it costs one pass after the sorts."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.abs(u - v).mean())
    i = np.arange(n, dtype=np.int64)
    j = np.arange(m, dtype=np.int64)
    # Breakpoints on the common scale 0..n*m: u's at i*m, v's at j*n; ties put u first.
    merged = np.empty(n + m, dtype=np.int64)
    merged[i + (i * m + n - 1) // n] = i * m
    merged[j + (j * n) // m + 1] = j * n
    lengths = np.diff(merged, append=n * m)
    gaps = np.abs(u[merged // m] - v[merged // n])
    return float(np.dot(lengths, gaps) / (n * m))


def _distinct_sorted(values: Any, limit: int) -> Any | None:
    """The distinct values of a sorted array, or None when there are more than *limit*
    (found by jumping from one value to the next: a few binary searches, not a pass)."""
    found: list[float] = []
    position = 0
    while position < len(values):
        if len(found) == limit:
            return None
        found.append(values[position])
        position = int(np.searchsorted(values, values[position], "right"))
    return np.array(found)


def _sorted_quantiles(values: Any, parts: int) -> Any:
    """The distinct order statistics splitting a sorted sample into *parts* (cheaper than
    np.quantile, which partitions again)."""
    positions = np.arange(1, parts, dtype=np.int64) * (len(values) - 1) // parts
    return np.unique(values[positions])


def _cdf_at(values: Any, edges: Any) -> Any:
    """The empirical CDF of a sorted sample at *edges* (binary searches only)."""
    return np.searchsorted(values, edges, "right") / len(values)


def _ks_p_value(u: Any, v: Any) -> tuple[float, float]:
    """Kolmogorov-Smirnov D at the reference's quantiles and its asymptotic p-value."""
    edges = _sorted_quantiles(u, KS_BINS)
    d = float(np.max(np.abs(_cdf_at(u, edges) - _cdf_at(v, edges)), initial=0.0))
    effective = math.sqrt(len(u) * len(v) / (len(u) + len(v)))
    from scipy.stats import kstwobign  # SciPy's import costs half a second: only when used

    return d, float(kstwobign.sf(d * effective))


def _psi(expected: Any, actual: Any) -> float:
    p = np.maximum(expected, _PSI_FLOOR)
    q = np.maximum(actual, _PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_psi(u: Any, v: Any) -> float:
    """PSI over the reference's deciles (both samples sorted)."""
    edges = _sorted_quantiles(u, 10)
    p = np.diff(_cdf_at(u, edges), prepend=0.0, append=1.0)
    q = np.diff(_cdf_at(v, edges), prepend=0.0, append=1.0)
    return _psi(p, q)


# -- categories ---------------------------------------------------------------------------


def _frequencies(reference: pd.Series, current: pd.Series) -> tuple[Any, Any, list[Any]]:
    """Per value (union of both, NaN dropped): its count divided by each sample's length
    (missing values included in the length, as Evidently does)."""
    ref_counts = reference.value_counts(dropna=True)
    cur_counts = current.value_counts(dropna=True)
    keys = list(ref_counts.index.union(cur_counts.index, sort=False))
    p = ref_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64") / max(len(reference), 1)
    q = cur_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64") / max(len(current), 1)
    return p, q, keys


def _chi_square_p(reference: Any, current: Any, n_ref: int, n_cur: int) -> float:
    """Two-sample chi-square test of homogeneity on the value counts."""
    counts = np.vstack([reference * n_ref, current * n_cur])
    counts = counts[:, counts.sum(axis=0) > 0]
    if counts.shape[1] < 2:
        return 1.0
    expected = counts.sum(axis=1, keepdims=True) * counts.sum(axis=0) / counts.sum()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    from scipy.stats import chi2

    return float(chi2.sf(statistic, counts.shape[1] - 1))


# -- columns ------------------------------------------------------------------------------


def _missing(column: pd.Series) -> float:
    return float(column.isna().mean()) if len(column) else 0.0


def numeric_drift(name: str, reference: pd.Series, current: pd.Series, mode: Mode) -> ColumnDrift:
    u = np.sort(_finite(reference))
    v = np.sort(_finite(current))
    missing = {"reference_missing": _missing(reference), "current_missing": _missing(current)}
    if len(u) == 0 or len(v) == 0:
        return ColumnDrift(name, "numeric", "empty", 0.0, DISTANCE_THRESHOLD, False, **missing)
    few_u, few_v = _distinct_sorted(u, 5), _distinct_sorted(v, 5)
    # Evidently's rule: five or fewer distinct values in all are compared as categories.
    few = few_u is not None and few_v is not None and len(np.union1d(few_u, few_v)) <= 5
    if mode == "evidently" and few:
        return _categorical(name, reference, current, mode, "numeric", missing)
    distance = wasserstein_sorted(u, v) / max(float(np.std(u)), 0.001)
    psi = _numeric_psi(u, v)
    if mode == "evidently":
        drifted = distance >= DISTANCE_THRESHOLD
        return ColumnDrift(name, "numeric", "wasserstein_norm", distance, DISTANCE_THRESHOLD,
                           bool(drifted), psi=psi, **missing)  # fmt: skip
    _, p_value = _ks_p_value(u, v)
    large = distance >= DISTANCE_THRESHOLD
    return ColumnDrift(name, "numeric", "wasserstein_norm", distance, DISTANCE_THRESHOLD,
                       large, p_value=p_value, psi=psi, **missing)  # fmt: skip


def _categorical(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    mode: Mode,
    kind: Kind,
    missing: dict[str, float],
) -> ColumnDrift:
    p, q, _ = _frequencies(reference, current)
    if not p.sum() or not q.sum():
        return ColumnDrift(name, kind, "empty", 0.0, DISTANCE_THRESHOLD, False, **missing)
    from scipy.spatial.distance import jensenshannon

    distance = float(jensenshannon(p, q))
    psi = _psi(p / p.sum(), q / q.sum())
    if mode == "evidently":
        return ColumnDrift(name, kind, "jensenshannon", distance, DISTANCE_THRESHOLD,
                           distance >= DISTANCE_THRESHOLD, psi=psi, **missing)  # fmt: skip
    p_value = _chi_square_p(p / p.sum(), q / q.sum(), reference.notna().sum(),
                            current.notna().sum())  # fmt: skip
    large = distance >= CATEGORY_EFFECT
    return ColumnDrift(name, kind, "jensenshannon", distance, CATEGORY_EFFECT,
                       large, p_value=p_value, psi=psi, **missing)  # fmt: skip


def categorical_drift(
    name: str, reference: pd.Series, current: pd.Series, mode: Mode
) -> ColumnDrift:
    missing = {"reference_missing": _missing(reference), "current_missing": _missing(current)}
    return _categorical(name, reference, current, mode, "categorical", missing)


def _benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    count = len(p_values)
    order = sorted(range(count), key=lambda i: p_values[i])
    adjusted = [1.0] * count
    running = 1.0
    for rank in range(count, 0, -1):
        index = order[rank - 1]
        running = min(running, p_values[index] * count / rank)
        adjusted[index] = running
    return adjusted


def column_kinds(frame: pd.DataFrame) -> dict[str, Kind]:
    """Numeric dtypes (booleans excluded) are numeric; everything else is categorical."""
    import pandas as pd

    kinds: dict[str, Kind] = {}
    for name in frame.columns:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        kinds[str(name)] = "numeric" if numeric else "categorical"
    return kinds


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Iterable[str] | None = None,
    kinds: dict[str, Kind] | None = None,
    mode: Mode = "default",
) -> DriftReport:
    """Compare *current* with *reference*, column by column (memory: a few copies of one
    column at a time)."""
    names = [str(c) for c in (columns if columns is not None else reference.columns)]
    missing = [n for n in names if n not in current.columns or n not in reference.columns]
    if missing:
        raise KeyError(f"columns missing from the data: {', '.join(missing)}")
    kinds = {**column_kinds(reference[names]), **(kinds or {})}
    results = []
    for name in names:
        if kinds[name] == "numeric":
            results.append(numeric_drift(name, reference[name], current[name], mode))
        else:
            results.append(categorical_drift(name, reference[name], current[name], mode))
    if mode == "default":
        tested = [i for i, r in enumerate(results) if r.p_value is not None]
        adjusted = _benjamini_hochberg([results[i].p_value or 0.0 for i in tested])
        for i, p_adjusted in zip(tested, adjusted, strict=True):
            result = results[i]
            significant = p_adjusted < ALPHA
            results[i] = ColumnDrift(
                **{**vars(result), "p_adjusted": p_adjusted,
                   "drifted": bool(result.drifted and significant)}
            )  # fmt: skip
    return DriftReport(mode, len(reference), len(current), results)
