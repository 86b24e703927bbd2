"""Driver-level access for the hot paths: the loops that run a million times (ledger append
and verification) and the few statements of every sealing commit, where SQLAlchemy's
per-row bookkeeping and per-engine statement compilation would cost more than the database.

Statements are written with ``?`` placeholders and run in the caller's transaction; the
placeholders are translated to the driver's own style.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy.orm import ColumnProperty, Mapper, Session

_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
T = TypeVar("T")


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


def execute(
    session: Session, statement: str, params: Sequence[Any] = (), *, many: bool = False
) -> list[tuple[Any, ...]]:
    """Run *statement* in *session*'s transaction with *params* (a sequence of parameter
    tuples when *many*); the rows it returns, if any."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # as the ORM's autoflush would: the statement sees pending changes
    connection = session.connection()
    sql = driver_sql(connection, statement)
    if sql is None:  # a driver with named or numeric placeholders: through SQLAlchemy
        named = _named(statement)
        batches = list(params) if many else [params]
        result = None
        for batch in batches:
            result = connection.execute(named, {f"p{i}": v for i, v in enumerate(batch)})
        return [tuple(row) for row in result] if result is not None and result.returns_rows else []
    cursor = driver_cursor(connection)
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, tuple(params))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        cursor.close()


def _named(statement: str) -> Any:
    pieces = statement.split("?")
    marked = "".join(f"{piece}:p{i}" for i, piece in enumerate(pieces[:-1])) + pieces[-1]
    return text(marked)


def insert_rows(session: Session, rows: Sequence[object]) -> None:
    """Insert new mapped objects, all of one class, in one ``executemany``. They are not
    added to the session (they stay transient): nothing in the session tracks them."""
    if not rows:
        return
    mapped = type(rows[0])
    if mapped not in _INSERTS:
        _INSERTS[mapped] = _insert_of(mapped)
    statement, keys = _INSERTS[mapped]
    execute(session, statement, [tuple(getattr(row, k) for k in keys) for row in rows], many=True)


_INSERTS: dict[type, tuple[str, tuple[str, ...]]] = {}


def _columns(mapped: type) -> tuple[str, list[ColumnProperty[Any]]]:
    """*mapped*'s table name and its column attributes, in table order."""
    mapper: Mapper[Any] = inspect(mapped)
    return cast(Table, mapper.local_table).name, list(mapper.column_attrs)


def _insert_of(mapped: type) -> tuple[str, tuple[str, ...]]:
    table, attributes = _columns(mapped)
    for attribute in attributes:
        column = attribute.columns[0]
        if column.default is not None or column.server_default is not None:
            raise TypeError(f"{mapped.__name__}.{attribute.key} has a default: use the ORM")
    names = ", ".join(attribute.columns[0].name for attribute in attributes)
    marks = ", ".join("?" for _ in attributes)
    return (
        f"INSERT INTO {table} ({names}) VALUES ({marks})",  # noqa: S608 - names from our models
        tuple(attribute.key for attribute in attributes),
    )


def select_one(session: Session, mapped: type[T], where: str, params: Sequence[Any]) -> T | None:
    """The first row :func:`select_rows` finds, or None."""
    found = select_rows(session, mapped, where, params)
    return found[0] if found else None


def select_rows(session: Session, mapped: type[T], where: str, params: Sequence[Any]) -> list[T]:
    """Rows of *mapped*'s table matching *where* (SQL with ``?`` placeholders), as new
    objects outside the session: for reading only (a change to them is never saved)."""
    connection = session.connection()
    reader = _READERS.get((mapped, connection.dialect.name))
    if reader is None:
        reader = _READERS[(mapped, connection.dialect.name)] = _reader_of(mapped, connection)
    select, keys, processors = reader
    rows = execute(session, select + where, params)
    found = []
    for row in rows:
        values = {
            key: value if process is None else process(value)
            for key, value, process in zip(keys, row, processors, strict=True)
        }
        found.append(mapped(**values))
    return found


_READERS: dict[tuple[type, str], tuple[str, tuple[str, ...], tuple[Any, ...]]] = {}


def _reader_of(
    mapped: type, connection: Connection
) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """The statement's head (every column, from our own models), the attribute each
    column fills, and the conversion each needs on this database (a SQLite boolean is
    stored as an integer)."""
    table, attributes = _columns(mapped)
    names = ", ".join(attribute.columns[0].name for attribute in attributes)
    processors = tuple(
        attribute.columns[0]
        .type.dialect_impl(connection.dialect)
        .result_processor(connection.dialect, None)
        for attribute in attributes
    )
    select = f"SELECT {names} FROM {table} WHERE "  # noqa: S608 - names from our models
    return select, tuple(a.key for a in attributes), processors
