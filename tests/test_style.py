"""The code base stays ruff-clean and mypy-clean (strict) on src/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    pytest.importorskip("ruff", reason="ruff is in the test extra; CI installs it")
    result = run_tool("ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra; CI installs it")
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from sealml.db import Database
    from sealml.db.models import Base

    database = Database(f"sqlite:///{tmp_path / 'm.db'}", create=True)
    database.upgrade()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_schema_head_names_the_newest_migration() -> None:
    """Opening a workspace compares its schema with ``SCHEMA_HEAD`` instead of asking
    Alembic: a new migration must move it."""
    from alembic.script import ScriptDirectory

    from sealml.db import engine

    migrations = Path(engine.__file__).parent / "migrations"
    assert ScriptDirectory(str(migrations)).get_current_head() == engine.SCHEMA_HEAD
