"""Driver-level access for the few loops that run a million times (ledger append and
verification), where SQLAlchemy's per-row work would cost more than the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def driver_sql(connection: Connection, statement: str) -> str | None:
    """*statement* written with ``?`` placeholders, in the driver's own style (None when the
    driver uses a style this module does not translate)."""
    marker = _MARKERS.get(connection.dialect.paramstyle)
    return None if marker is None else statement.replace("?", marker)


def driver_cursor(connection: Connection) -> Any:
    """A cursor of the DBAPI connection under *connection* (same transaction)."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    return dbapi.cursor()
