"""Poisoning screening finds injected label flips, backdoors and out-of-range rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sealml.data.screening import ScreeningGateError, ScreeningPolicy, screen
from sealml.errors import UsageError

GERMAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "german_credit.csv"


@pytest.fixture(scope="module")
def credit() -> pd.DataFrame:
    frame = pd.read_csv(GERMAN)
    return frame


def label_of(frame: pd.DataFrame) -> str:
    return str(frame.columns[-1])


def test_backdoor_rows_are_found_and_removed(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    rng = np.random.default_rng(1)
    poisoned = credit.copy()
    target = poisoned[label].value_counts().idxmin()
    rows = rng.choice(poisoned.index[poisoned[label] != target], size=30, replace=False)
    poisoned.loc[rows, "purpose"] = "A410"  # a rare purpose ...
    poisoned.loc[rows, "housing"] = "A153"  # ... paired with a rare housing value
    poisoned.loc[rows, label] = target
    report, cleaned = screen(poisoned, ScreeningPolicy(label=label, detectors=("trigger",)))
    flagged = set(report.flagged["trigger"])
    assert len(set(rows.tolist()) & flagged) >= 28 and len(flagged) <= 45
    assert all({"purpose", "housing"} & set(t["columns"]) for t in report.triggers)
    assert not set(rows.tolist()) & set(cleaned.index)


def test_out_of_range_rows_against_a_reference(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    poisoned = credit.copy()
    poisoned.loc[[3, 9], "age"] = [250, -4]
    poisoned.loc[12, "purpose"] = "A499"
    report, _ = screen(
        poisoned, ScreeningPolicy(label=label, detectors=("out_of_range",)), reference=credit
    )
    assert sorted(report.flagged["out_of_range"]) == [3, 9, 12]
    assert "age" in report.shift


def test_label_flips_are_mostly_found(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    rng = np.random.default_rng(2)
    poisoned = credit.copy()
    rows = rng.choice(poisoned.index, size=60, replace=False)
    classes = sorted(poisoned[label].unique())
    poisoned.loc[rows, label] = poisoned.loc[rows, label].map(
        {classes[0]: classes[1], classes[1]: classes[0]}
    )
    report, _ = screen(poisoned, ScreeningPolicy(label=label, detectors=("label_issue",)))
    found = set(report.flagged["label_issue"]) & set(rows.tolist())
    assert len(found) >= 20, "confident learning should find a good share of the flips"


def test_duplicates_downweighting_and_the_gate(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    doubled = pd.concat([credit, credit.iloc[:5]], ignore_index=True)
    policy = ScreeningPolicy(label=label, detectors=("duplicate",), action="downweight", weight=0.0)
    report, weighted = screen(doubled, policy)
    assert report.flagged["duplicate"] == [1000, 1001, 1002, 1003, 1004]
    assert weighted["sample_weight"].sum() == 1000 and len(weighted) == 1005
    gate = ScreeningPolicy(label=label, detectors=("duplicate",), max_flagged_share=0.001)
    with pytest.raises(ScreeningGateError, match=r"over the 0\.1%"):
        screen(doubled, gate)


def test_unknown_sources_and_bad_policies(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    frame = credit.head(50).copy()
    frame["source"] = ["crm"] * 48 + ["scraped", "scraped"]
    policy = ScreeningPolicy(
        label=label, detectors=("unknown_source",), source_column="source", allowed_sources=("crm",)
    )
    report, _ = screen(frame, policy)
    assert report.flagged["unknown_source"] == [48, 49]
    with pytest.raises(UsageError, match="no label column"):
        screen(frame, ScreeningPolicy(label="nope"))
    with pytest.raises(UsageError, match="unknown detector"):
        screen(frame, ScreeningPolicy(label=label, detectors=("psychic",)))


def test_near_duplicates(credit: pd.DataFrame) -> None:
    label = label_of(credit)
    near = credit.iloc[:2].copy()
    near["credit_amount"] = near["credit_amount"] + 1  # 1169 -> 1170: equal to 3 digits
    near["purpose"] = near["purpose"].str.lower() + " "
    frame = pd.concat([credit, near], ignore_index=True)
    report, _ = screen(frame, ScreeningPolicy(label=label, detectors=("duplicate",)))
    assert report.flagged["duplicate"] == [1000, 1001]
    assert report.balance["near_duplicates"] == 2
