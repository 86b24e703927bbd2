"""The code base stays ruff-clean and mypy-clean (strict) on src/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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
    database.migrate()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def schema_of(database: Any) -> dict[str, Any]:
    """Every table's columns, keys, indexes and constraints, as the database reports them."""
    from sqlalchemy import inspect

    with database.engine.connect() as connection:
        inspector = inspect(connection)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign_keys": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"],
                     tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
        }  # fmt: skip


def test_a_new_database_gets_the_schema_the_migrations_build(tmp_path: Path) -> None:
    """A new database is created from the models in one step and stamped with the head
    revision; running every migration must give exactly the same schema."""
    from sealml.db import Database

    migrated = Database(f"sqlite:///{tmp_path / 'migrated.db'}", create=True)
    migrated.migrate()
    created = Database(f"sqlite:///{tmp_path / 'created.db'}", create=True)
    created.upgrade()
    assert created.current_revision() == migrated.current_revision()
    assert schema_of(created) == schema_of(migrated)


def test_the_schema_head_names_the_newest_migration() -> None:
    """Opening a workspace compares its schema with ``SCHEMA_HEAD`` instead of asking
    Alembic: a new migration must move it."""
    from alembic.script import ScriptDirectory

    from sealml.db import engine

    migrations = Path(engine.__file__).parent / "migrations"
    assert ScriptDirectory(str(migrations)).get_current_head() == engine.SCHEMA_HEAD
