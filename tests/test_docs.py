"""The README's quick start is two commands and CI runs the second verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands() -> None:
    install_and_demo, tests = quick_start_commands()
    assert "pip install" in install_and_demo and "sealml demo" in install_and_demo
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert f'TEST_COMMAND="{quick_start_commands()[1]}"' in script


def test_docs_exist_for_formats_and_threat_model() -> None:
    formats = (ROOT / "docs" / "formats.md").read_text()
    for heading in ("Sealed blob", "Data keys", "Ledger events", "Checkpoints", "Proof files"):
        assert f"## {heading}" in formats
    assert (ROOT / "docs" / "threat-model.md").exists()
    assert (ROOT / "docs" / "cli.md").exists()
