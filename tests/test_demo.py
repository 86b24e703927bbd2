"""`sealml demo`: the README's main job, end to end (about a minute on two cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_demo_runs_the_whole_secure_pipeline(cli: Any, tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    keep.mkdir()
    result = cli("demo", "--keep", str(keep))
    assert result.code == 0, result.stderr[-2000:]
    assert "adult-income is in production" in result.stdout
    assert "one flipped byte in the sealed model was refused" in result.stdout
    cards = list(keep.glob("adult-income-v1-card.*"))
    assert sorted(c.suffix for c in cards) == [".html", ".md"]
    card = (keep / "adult-income-v1-card.md").read_text()
    assert "screened_screening" in card and "## Gates" in card
    again = cli("demo", "--keep", str(keep))
    assert again.code == 2 and "already exists" in again.stderr


def test_walkthrough_catches_every_tamper(cli: Any) -> None:
    result = cli("demo", "--walkthrough")
    assert result.code == 0, result.stderr[-2000:]
    assert "Every tamper was caught and every proof checked." in result.stdout
