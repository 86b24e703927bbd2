"""Drift detection with known answers on the Adult data, and the Evidently-compatible
scores against the formulas Evidently uses (scipy's)."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from sealml.monitoring.drift import compare, wasserstein_sorted

ROWS = 50_000


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    with (files("sealml.demo") / "adult.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip", skipinitialspace=True)
    return frame.drop(columns=["income"])


def _split(adult: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves of a random resample of Adult, ROWS rows each."""
    pool = adult.sample(2 * ROWS, replace=True, random_state=seed).reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(2 * ROWS)
    return pool.iloc[order[:ROWS]].reset_index(drop=True), pool.iloc[order[ROWS:]].reset_index(
        drop=True
    )


def test_no_false_alarm_on_random_splits(adult: pd.DataFrame) -> None:
    alarms = 0
    for seed in range(100):
        reference, current = _split(adult, seed)
        alarms += bool(compare(reference, current).drifted)
    assert alarms <= 1


@pytest.mark.parametrize("column", ["age", "hours-per-week", "education-num"])
def test_a_small_mean_shift_is_found_and_named(adult: pd.DataFrame, column: str) -> None:
    for seed in range(5):
        reference, current = _split(adult, seed)
        current[column] = current[column] + 0.2 * reference[column].std()
        assert compare(reference, current).drifted == [column]


@pytest.mark.parametrize(
    ("column", "category"), [("marital-status", "Never-married"), ("workclass", "Private")]
)
def test_a_ten_point_category_shift_is_found_and_named(
    adult: pd.DataFrame, column: str, category: str
) -> None:
    for seed in range(5):
        reference, current = _split(adult, seed)
        rng = np.random.default_rng(seed)
        others = current.index[current[column] != category]
        share = (current[column] == category).mean()
        moved = rng.choice(others, int(0.10 * len(current)), replace=False)
        current.loc[moved, column] = category
        assert (current[column] == category).mean() == pytest.approx(share + 0.10, abs=0.001)
        report = compare(reference, current)
        assert report.drifted == [column]
        # Evidently's distance threshold alone misses it.
        assert compare(reference, current, mode="evidently").drifted == []


def test_wasserstein_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for n, m in [(1, 1), (1, 9), (10, 10), (1000, 777), (5000, 12_345), (3, 2)]:
        u, v = rng.normal(size=n), rng.gamma(2.0, size=m)
        assert wasserstein_sorted(np.sort(u), np.sort(v)) == pytest.approx(
            wasserstein_distance(u, v), rel=1e-12, abs=1e-12
        )


def test_evidently_mode_scores_are_evidentlys_formulas(adult: pd.DataFrame) -> None:
    reference, current = _split(adult, 11)
    current["age"] = current["age"] * 1.1
    report = compare(reference, current, mode="evidently")
    by_column = {c.column: c for c in report.columns}
    for name in ("age", "fnlwgt", "hours-per-week"):
        ref, cur = reference[name].to_numpy(float), current[name].to_numpy(float)
        expected = wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
        assert by_column[name].statistic == "wasserstein_norm"
        assert abs(by_column[name].score - expected) < 1e-9
    for name in ("workclass", "race"):
        keys = sorted(set(reference[name].dropna()) | set(current[name].dropna()))
        p = reference[name].value_counts().reindex(keys, fill_value=0) / len(reference)
        q = current[name].value_counts().reindex(keys, fill_value=0) / len(current)
        assert abs(by_column[name].score - float(jensenshannon(p, q))) < 1e-9
    assert "age" in report.drifted
    assert by_column["education-num"].statistic == "wasserstein_norm"  # 16 values: numeric


def test_few_distinct_numbers_are_compared_as_categories() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"stars": rng.integers(1, 6, 5000)})
    current = pd.DataFrame({"stars": rng.integers(1, 6, 5000)})
    column = compare(reference, current, mode="evidently").columns[0]
    assert column.statistic == "jensenshannon" and column.kind == "numeric"


def test_missing_columns_and_empty_data() -> None:
    with pytest.raises(KeyError, match="b"):
        compare(pd.DataFrame({"a": [1.0]}), pd.DataFrame({"b": [1.0]}), columns=["a", "b"])
    empty = compare(pd.DataFrame({"a": [np.nan, np.inf]}), pd.DataFrame({"a": [1.0, 2.0]}))
    assert empty.drifted == [] and empty.columns[0].statistic == "empty"
