"""Engine setup for SQLite (default) and PostgreSQL, transactions, and migrations.

SQLite runs in WAL mode with full synchronous writes and foreign keys on. Write transactions
start with ``BEGIN IMMEDIATE`` so two writers never interleave (the ledger head is a single
row every writer updates); PostgreSQL gets the same effect from ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError, UsageError
from ..fsutil import FILE_MODE
from ..urls import is_loopback_host

_MIGRATIONS = Path(__file__).parent / "migrations"
_BUSY_TIMEOUT_MS = 30_000
_CACHE_KIB = 64 * 1024


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (a shredded data key) are overwritten, not left in free pages.
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "DEFERRED" if connection.get_execution_options().get("sealml_read") else "IMMEDIATE"
        connection.exec_driver_sql(f"BEGIN {mode}")


SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def check_workspace_url(url: str) -> None:
    """Refuse *url* unless it may go into ``sealml.toml`` as a new workspace's database:
    SQLite or PostgreSQL, and no password (the file is not a secret store; PostgreSQL's client reads
    one from ``~/.pgpass`` or ``PGPASSWORD``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("database URL is malformed") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"database {parsed.get_backend_name()!r} is not supported; use SQLite or PostgreSQL"
        )
    if parsed.password is not None:
        raise ConfigError(
            "the database URL holds a password; keep it out of sealml.toml "
            "(PostgreSQL reads it from ~/.pgpass or PGPASSWORD)"
        )


_VERIFIED_TLS = ("verify-full", "verify-ca")


def check_transport(url: URL, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a PostgreSQL server reached over the network unless libpq is told to use TLS
    and check the server's certificate (``sslmode=verify-full`` or ``verify-ca``, in the
    URL or ``PGSSLMODE``): the metadata, the ledger and password-sealed keys cross it.
    A Unix socket or a loopback address needs nothing."""
    if url.get_backend_name() != "postgresql":
        return
    given = url.query.get("host")
    listed = [url.host] if url.host else []
    listed += list(given) if isinstance(given, tuple) else [given] if given else []
    hosts = [h.strip() for entry in listed for h in str(entry).split(",") if h.strip()]
    remote = [h for h in hosts if not h.startswith("/") and not is_loopback_host(h)]
    if not remote:
        return
    mode = url.query.get("sslmode") or environ.get("PGSSLMODE")
    if mode not in _VERIFIED_TLS:
        raise ConfigError(
            f"the database server {remote[0]} is reached over the network without verified "
            "TLS; add ?sslmode=verify-full to the URL (the server's CA in "
            "~/.postgresql/root.crt or sslrootcert=...)"
        )


# The newest migration shipped with this sealml, so that opening a workspace needs no
# Alembic (its import costs every command a sixth of a second); tests/test_style.py
# checks it against the migrations folder.
SCHEMA_HEAD = "0008"


class Database:
    """The metadata database of one workspace."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        try:
            self.url = make_url(url)
        except ArgumentError:
            raise ConfigError("database URL is malformed") from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        check_transport(self.url)
        sqlite_file = self.file = _sqlite_path(url)  # None on a server
        if sqlite_file is not None and not sqlite_file.exists():
            if not create:
                raise ConfigError(f"the workspace database {sqlite_file} is missing")
            # Create the file 0600 before SQLite does; its -wal and -shm files copy the mode.
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(sqlite_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        try:
            self.engine = create_engine(url, future=True)
        except (ArgumentError, ImportError) as error:
            raise ConfigError(f"cannot use database {self.safe_url}: {error}") from None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        reading = self.engine.execution_options(sealml_read=True)
        if not self.is_sqlite:
            # One snapshot per read transaction, as SQLite gives: a check that reads a row
            # and then what vouches for it (a principal and the checkpoint anchoring it)
            # never sees a change committed in between. Read-only, so never a
            # serialisation failure.
            reading = reading.execution_options(isolation_level="REPEATABLE READ")
        self._reader = sessionmaker(reading, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._guard(), self._writer.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction on one snapshot (DEFERRED on SQLite, so it takes no write
        lock; REPEATABLE READ on a server)."""
        with self._guard(), self._reader() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as error:
            raise UsageError(
                f"database {self.safe_url} is unavailable: {error.orig or error}".splitlines()[0]
            ) from None
        except (IntegrityError, DataError) as error:
            # The driver's text may quote row values: name the kind of error only.
            raise UsageError(f"database {self.safe_url}: {type(error).__name__}") from None
        except DBAPIError as error:
            reason = str(error.orig or type(error).__name__).splitlines()[0]
            raise UsageError(f"database {self.safe_url} cannot be used: {reason}") from None
        except SQLAlchemyError as error:
            raise UsageError(f"database {self.safe_url}: {type(error).__name__}") from None

    # -- migrations -----------------------------------------------------------------------

    def _alembic_config(self, connection: Any) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str:
        return SCHEMA_HEAD

    def current_revision(self) -> str | None:
        """The schema's revision, None for a database without one (new)."""
        with self._guard(), self.engine.connect() as connection:
            connection = connection.execution_options(sealml_read=True)
            try:  # the one version row, read directly (Alembic's context costs more)
                rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            except DBAPIError:  # no version table yet
                return None
            if len(rows) == 1:
                return str(rows[0][0])
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(connection).get_current_revision()

    def upgrade(self) -> None:
        """Bring the schema to the latest revision. A new, empty database gets the models'
        schema in one step, stamped ``SCHEMA_HEAD`` (the migrations build the same schema:
        a test compares the two); one with an older schema is migrated."""
        current = self.current_revision()
        if current == self.head_revision():
            return
        if current is None and not self.table_names():
            self._create_schema()
            return
        self.migrate()

    def migrate(self) -> None:
        """Run the Alembic migrations from the database's revision to the newest."""
        from alembic import command

        with self._guard(), self.engine.begin() as connection:
            command.upgrade(self._alembic_config(connection), "head")

    def _create_schema(self) -> None:
        from .models import Base

        with self._guard(), self.engine.begin() as connection:
            Base.metadata.create_all(connection)
            connection.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            connection.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:head)"),
                {"head": SCHEMA_HEAD},
            )

    def table_names(self) -> list[str]:
        """The tables the database holds now (any schema owner's, in the default schema)."""
        with self._guard(), self.engine.connect() as connection:
            return list(inspect(connection).get_table_names())

    def drop_schema(self) -> None:
        """Drop every table the migrations create (after a failed ``init``, in the
        database it found empty)."""
        from .models import Base

        with self._guard(), self.engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")

    def truncate_journal(self) -> None:
        """Fold the SQLite write-ahead log into the database and empty it, so no copy of a
        deleted row lingers in the journal (no-op on other databases)."""
        if not self.is_sqlite:
            return
        with self._guard():
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def dispose(self) -> None:
        self.engine.dispose()
