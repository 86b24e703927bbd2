"""The extraction detector on the Adult data: quiet for ordinary traffic, alerting for a
sweep of the input space, boundary probing and one-feature-at-a-time walks."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sealml.data.profile import profile_frame
from sealml.serving.extraction import ExtractionDetector
from sealml.serving.schema import numeric_rows

NUMERIC = ["age", "education-num", "hours-per-week", "capital-gain"]
CATEGORIES = ["workclass", "marital-status", "race", "sex"]


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    with (files("sealml.demo") / "adult.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip", skipinitialspace=True)
    return frame[NUMERIC + CATEGORIES].dropna()


def _feed(detector: ExtractionDetector, frame: pd.DataFrame, batch: int = 1,
          probabilities: Any = None) -> list[Any]:  # fmt: skip
    alerts = []
    for start in range(0, len(frame), batch):
        part = frame.iloc[start : start + batch]
        instances = part.to_dict(orient="records")
        numeric = numeric_rows(instances, [n for n in NUMERIC if n in part.columns])
        chunk = None if probabilities is None else probabilities[start : start + batch].tolist()
        alert = detector.observe("apikey:x", instances, numeric, chunk)
        if alert is not None:
            alerts.append(alert)
    return alerts


def test_ordinary_traffic_raises_nothing(adult: pd.DataFrame) -> None:
    train = adult.sample(frac=0.5, random_state=0)
    live = adult.drop(train.index).sample(3000, random_state=1)
    detector = ExtractionDetector(profile_frame(train), window=200)
    rng = np.random.default_rng(0)
    probabilities = rng.beta(0.5, 0.5, size=len(live))  # mostly confident predictions
    probabilities = np.column_stack([probabilities, 1 - probabilities])
    probabilities[np.abs(probabilities[:, 0] - 0.5) < 0.05] = [0.9, 0.1]
    assert _feed(detector, live, batch=7, probabilities=probabilities) == []


def test_a_sweep_of_the_input_space_is_caught(adult: pd.DataFrame) -> None:
    profile = profile_frame(adult)
    rng = np.random.default_rng(2)
    sweep = pd.DataFrame(
        {
            **{n: rng.uniform(adult[n].min(), adult[n].max(), 300).round() for n in NUMERIC},
            **{c: rng.choice(sorted(adult[c].unique()), 300) for c in CATEGORIES},
        }
    )[NUMERIC + CATEGORIES]
    alerts = _feed(ExtractionDetector(profile, window=200), sweep)
    assert len(alerts) == 1
    assert alerts[0].signal == "sweep" and alerts[0].window <= 120


def test_boundary_probing_and_line_search_are_caught(adult: pd.DataFrame) -> None:
    profile = profile_frame(adult)
    start = adult.sample(150, random_state=3).reset_index(drop=True)
    near = np.column_stack([np.full(150, 0.52), np.full(150, 0.48)])
    alerts = _feed(ExtractionDetector(profile, window=200), start, probabilities=near)
    assert [a.signal for a in alerts] == ["boundary"]
    walk = pd.concat([start.iloc[[0]]] * 150, ignore_index=True)
    walk["age"] = np.arange(17, 17 + 150) % 74 + 17
    walk["hours-per-week"] = 40
    alerts = _feed(ExtractionDetector(None, window=200), walk)
    assert [a.signal for a in alerts] == ["line-search"]
