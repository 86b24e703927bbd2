"""Metadata database: SQLAlchemy 2 models, engine setup and Alembic migrations."""

from .engine import Database

__all__ = ["Database"]
