"""`sealml demo`: the README's main job, end to end (about a minute on two cores)."""

from __future__ import annotations

import stat
import subprocess
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
    credentials = keep / "workspace" / "demo-credentials.env"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    flat = result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    assert str(credentials) in flat and "sealmlui--dev-tls" in flat
    sourced = subprocess.run(
        ["bash", "-c", f"set -a; . '{credentials}'; set +a; env"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    env = dict(line.split("=", 1) for line in sourced if line.startswith("SEALML_"))
    assert env["SEALML_USER"] == "admin" and env["SEALML_WORKSPACE"] == str(keep / "workspace")
    shown = cli("model", "show", "adult-income@production", "--json", env=env)
    assert shown.code == 0, shown.stderr
    assert '"production"' in shown.stdout
    assert shown.stderr == ""  # sealml.toml holds the gates the demo approved
    again = cli("demo", "--keep", str(keep))
    assert again.code == 2 and "already exists" in again.stderr


def test_walkthrough_catches_every_tamper(cli: Any, tmp_path: Path) -> None:
    result = cli("demo", "--walkthrough", "--keep", str(tmp_path))
    assert result.code == 0, result.stderr[-2000:]
    assert "Every tamper was caught and every proof checked." in result.stdout
    assert "saved under the old key still proves" in result.stdout
    credentials = tmp_path / "workspace" / "demo-credentials.env"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert "SEALML_PASSPHRASE=" in credentials.read_text()
