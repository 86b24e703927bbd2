"""A real PostgreSQL server for the tests that need one: a throw-away cluster per test
process, reached over a Unix socket only (no TCP port), one fresh database per test."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "sealml"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` account."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres_socket() -> Iterator[Path]:
    """Start a cluster (trust authentication on its private socket folder); stop it after."""
    pytest.importorskip("psycopg", reason="psycopg is in the test extra (pip install -e '.[test]')")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres account to run the server as")
    folder = Path(tempfile.mkdtemp(prefix="sealml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", USER, "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-k {folder} -c listen_addresses='' -p 5432 -F"
    start = [pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o", options, "start"]
    subprocess.run(
        _as_server_user(start),
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def database_url(socket: Path, name: str) -> str:
    return f"postgresql+psycopg://{USER}@/{name}?host={socket}&port=5432"


@pytest.fixture
def pg_url(postgres_socket: Path) -> str:
    """The URL of a new, empty database on the test cluster."""
    return new_database(postgres_socket)


def new_database(postgres_socket: Path) -> str:
    """Create a new, empty database on the test cluster; its URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host=str(postgres_socket), port=5432, user=USER, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return database_url(postgres_socket, name)
