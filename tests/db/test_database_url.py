"""Workspaces whose metadata database is given by URL (``init --database-url``):
PostgreSQL on a real server, with the same sealing, runs, registry and ledger as the
default SQLite file, or a SQLite file elsewhere."""

from __future__ import annotations

import contextlib
import functools
import io
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.errors import ConfigError, UsageError, WorkspaceExistsError
from sealml.ledger import EventFilter
from sealml.pipeline.loader import load_pipeline

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, admin_env, reopen
from .conftest import database_url


def create(path: Path, url: str) -> Workspace:
    return Workspace.init(
        path,
        passphrase=Secret(PASSPHRASE),
        admin_password=Secret(ADMIN_PASSWORD),
        kdf=FAST_PARAMS,
        database_url=url,
    )


def test_a_workspace_on_postgres_seals_runs_and_verifies(
    pg_url: str, tmp_path: Path, small_pipeline: Path
) -> None:
    root = tmp_path / "ws"
    with create(root, pg_url) as ws:
        assert not ws.db.is_sqlite
        info = ws.put(io.BytesIO(b"rows\n1,2\n"), "dataset", "tiny.csv")
        report = ws.run_pipeline(load_pipeline(small_pipeline))
    config = tomllib.loads((root / "sealml.toml").read_text())
    assert config["database"]["url"] == pg_url
    assert not (root / ".sealml" / "sealml.db").exists()
    with reopen(root) as ws:
        assert ws.read_bytes(info.id) == b"rows\n1,2\n"
        assert ws.read_bytes(report.artifacts["summary"]) == b"sum=10"
        steps = ws.verify_provenance(report.artifacts["summary"])
        assert [s.status for s in steps][-1] == "source"
        ledger = ws.audit_verify()
        assert ledger.ok, ledger.problems
        assert ledger.events > 5


def test_a_backup_of_a_postgres_workspace_restores_as_a_folder(
    pg_url: str, tmp_path: Path, small_pipeline: Path
) -> None:
    from sealml.workspace.backup import create_backup, restore_backup

    root = tmp_path / "ws"
    with create(root, pg_url) as ws:
        info = ws.put(io.BytesIO(b"rows\n1,2\n"), "dataset", "tiny.csv")
        report = ws.run_pipeline(load_pipeline(small_pipeline))
        ws.add_user("dana", ["auditor"], password=Secret("dana-password"))
        made = create_backup(ws, tmp_path / "ws.backup", Secret(PASSPHRASE))
    assert made.artifacts >= 3
    restored = restore_backup(tmp_path / "ws.backup", tmp_path / "copy", Secret(PASSPHRASE))
    config = tomllib.loads((restored.root / "sealml.toml").read_text())
    assert config["database"]["url"] == "sqlite:///.sealml/sealml.db"  # never the server
    with reopen(restored.root) as copy:
        assert copy.db.is_sqlite
        assert copy.read_bytes(info.id) == b"rows\n1,2\n"
        assert copy.read_bytes(report.artifacts["summary"]) == b"sum=10"
        assert [s.status for s in copy.verify_provenance(report.artifacts["summary"])][-1] == (
            "source"
        )
        ledger = copy.audit_verify()
        assert ledger.ok, ledger.problems
        actions = [e.fields()["action"] for e in copy.audit_events(EventFilter())]
        assert actions.count("user.add") == 2
        assert actions.index("workspace.restore") == actions.index("workspace.backup") + 1
    with reopen(restored.root, "dana", "dana-password") as dana:
        assert dana.require_actor().principal.roles == ("auditor",)
    with reopen(root) as ws:  # the original is untouched
        assert not ws.db.is_sqlite
        assert "workspace.restore" not in [
            e.fields()["action"] for e in ws.audit_events(EventFilter())
        ]


def test_a_database_holding_a_workspace_is_never_taken_over(pg_url: str, tmp_path: Path) -> None:
    with create(tmp_path / "first", pg_url) as ws:
        kept = ws.put(io.BytesIO(b"kept"), "other", "kept.txt").id
    with pytest.raises(WorkspaceExistsError, match="not empty"):
        create(tmp_path / "second", pg_url)
    assert not (tmp_path / "second" / "sealml.toml").exists()
    with reopen(tmp_path / "first") as ws:
        assert ws.read_bytes(kept) == b"kept"
        assert ws.audit_verify().ok


def test_a_failed_init_drops_only_the_tables_it_created(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="password"):
        Workspace.init(
            tmp_path / "ws",
            passphrase=Secret(PASSPHRASE),
            admin_password=Secret("short"),
            kdf=FAST_PARAMS,
            database_url=pg_url,
        )
    with create(tmp_path / "ws", pg_url) as ws:  # the database is still empty
        assert ws.audit_verify().ok


def test_init_fails_cleanly_when_the_admin_cannot_be_created(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Workspace.init(
            tmp_path / "ws",
            passphrase=Secret(PASSPHRASE),
            admin_password=Secret(ADMIN_PASSWORD),
            admin_name="not a valid name!",
            kdf=FAST_PARAMS,
            database_url=pg_url,
        )
    with create(tmp_path / "ws", pg_url) as ws:
        assert ws.audit_verify().ok


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://sealml:hunter2-secret@/db", "holds a password"),
        ("mysql://sealml@localhost/db", "not supported"),
        ("postgresql+psycopg://sealml@/db?host=/nonexistent-sealml-socket", "unavailable"),
        ("::not a url::", "malformed"),
        ("postgresql+psycopg://sealml@db.example.org/db", "without verified TLS"),
        ("postgresql+psycopg://sealml@db.example.org/db?sslmode=require", "without verified"),
        ("postgresql+psycopg://sealml@/db?host=/tmp,db.example.org", "db.example.org"),
    ],
)
def test_bad_database_urls_are_refused_in_one_line(url: str, message: str, tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="psycopg is in the test extra")
    root = tmp_path / "ws"
    with pytest.raises((ConfigError, UsageError), match=message) as caught:
        create(root, url)
    assert "\n" not in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)
    assert not (root / "sealml.toml").exists()
    assert not (root / ".sealml").exists()


@pytest.mark.parametrize(
    ("url", "environ"),
    [
        ("postgresql+psycopg://sealml@/db?host=/var/run/postgresql", {}),
        ("postgresql+psycopg://sealml@localhost:5433/db", {}),
        ("postgresql+psycopg://sealml@127.0.0.1/db", {}),
        ("postgresql+psycopg://sealml@[::1]/db", {}),
        ("postgresql+psycopg://sealml@db.example.org/db?sslmode=verify-full", {}),
        ("postgresql+psycopg://sealml@db.example.org/db", {"PGSSLMODE": "verify-ca"}),
    ],
)
def test_sockets_loopback_and_verified_tls_may_reach_the_database(
    url: str, environ: dict[str, str]
) -> None:
    from sqlalchemy.engine import make_url

    from sealml.db.engine import check_transport

    check_transport(make_url(url), environ)  # raises when refused


def test_cli_init_takes_a_database_url(cli: object, pg_url: str, postgres_socket: Path) -> None:
    result = cli("init", "--insecure-fast-kdf", "--database-url", pg_url, env=admin_env())  # type: ignore[operator]
    assert result.code == 0, result.stderr
    result = cli("audit", "verify", env=admin_env())  # type: ignore[operator]
    assert result.code == 0, result.stderr
    bad = database_url(postgres_socket, "x").replace("sealml@", "sealml:pw-secret@")
    result = cli("init", "--database-url", bad, env=admin_env())  # type: ignore[operator]
    assert result.code == 2
    assert "holds a password" in result.stderr
    assert "pw-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def concurrently(*workers: Callable[[], None]) -> Iterator[list[BaseException]]:
    """Run each worker in a thread while the block runs; the errors they raised, complete
    once the block is left (every thread joined)."""
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:  # reported by the caller, with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    try:
        yield errors
    finally:
        for thread in threads:
            thread.join()


def test_concurrent_writers_keep_one_consistent_ledger(pg_url: str, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with create(root, pg_url) as ws:
        before = ws.audit_verify().events

    def write(worker: int) -> None:
        with reopen(root) as ws:
            for n in range(15):
                ws.record([ws.event("test.write", f"test:{worker}", n=n)])

    with concurrently(*(functools.partial(write, w) for w in range(3))) as errors:
        pass
    assert not errors
    with reopen(root) as ws:
        report = ws.audit_verify()
    assert report.ok, report.problems
    assert report.events >= before + 45  # every event appended (logins add their own)


def test_drills_refuse_a_database_outside_the_workspace(pg_url: str, tmp_path: Path) -> None:
    """A drill runs on a copy of the folder: a database outside it would be the live one."""
    with create(tmp_path / "ws", pg_url) as ws, pytest.raises(UsageError, match="outside"):
        ws.drill("tampered-model", "credit")
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with create(tmp_path / "other", elsewhere) as ws, pytest.raises(UsageError, match="outside"):
        ws.drill("tampered-model", "credit")


def test_the_registry_on_postgres(pg_url: str, tmp_path: Path) -> None:
    import textwrap

    import pandas as pd

    from ..models.test_registry import MODEL_PIPELINE

    folder = tmp_path / "tiny"
    folder.mkdir()
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}" for i in range(60)]
    (folder / "tiny.csv").write_text("\n".join(rows) + "\n")
    (folder / "tiny_pipeline.py").write_text(textwrap.dedent(MODEL_PIPELINE))
    with create(tmp_path / "ws", pg_url) as ws:
        report = ws.run_pipeline(load_pipeline(folder / "tiny_pipeline.py"))
        version = ws.register_model(report.artifacts["model"], "credit").version
        described, model = ws.resolve_model("credit", version)
        assert described.version == version == 1
        frame = pd.read_csv(folder / "tiny.csv")
        assert (model.predict(frame[["a", "b"]]) == frame["y"]).mean() > 0.9
        checks = {c.check: c.passed for c in ws.gate_report("credit", version, "staging")}
        assert checks["signature, scan, provenance"]
        assert ws.model_card("credit", version).chain
        assert ws.audit_verify().ok


def test_an_unreachable_server_is_one_line_without_the_password(
    cli: object, pg_url: str, ws_path: Path
) -> None:
    create(ws_path, pg_url).close()
    config = ws_path / "sealml.toml"
    # Edited by hand to a server that is not there, with a password in it.
    dead = "postgresql+psycopg://sealml:pw-in-config@/db?host=/nonexistent-sealml-socket"
    config.write_text(config.read_text().replace(pg_url, dead))
    result = cli("audit", "verify", env=admin_env())  # type: ignore[operator]
    assert result.code == 2
    message = result.stderr.strip()
    assert "unavailable" in message
    assert "\n" not in message
    assert "pw-in-config" not in result.stderr + result.stdout


def test_an_sqlite_file_holding_a_workspace_is_never_taken_over(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    with create(tmp_path / "first", f"sqlite:///{shared}") as ws:
        kept = ws.put(io.BytesIO(b"kept"), "other", "kept.txt").id
    with pytest.raises(WorkspaceExistsError, match="not empty"):
        create(tmp_path / "second", f"sqlite:///{shared}")
    with reopen(tmp_path / "first") as ws:
        assert ws.read_bytes(kept) == b"kept"
        assert ws.audit_verify().ok


def _sql(url: str, statement: str, *args: object) -> list[tuple[object, ...]]:
    """A statement straight to the server, as someone with database access would run it."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.query["host"], port=5432, user=parsed.username, dbname=parsed.database,
        autocommit=True,
    ) as connection:  # fmt: skip
        cursor = connection.execute(statement, args)
        return cursor.fetchall() if cursor.description else []


def test_rows_edited_on_the_server_are_caught(pg_url: str, tmp_path: Path) -> None:
    from sealml.errors import IntegrityError

    root = tmp_path / "ws"
    with create(root, pg_url) as ws:
        info = ws.put(io.BytesIO(b"salary,age\n1,2\n"), "dataset", "pay.csv")
    (body,) = _sql(pg_url, "SELECT body FROM ledger_events WHERE seq = 2")[0]
    forged = bytes(body).replace(b'"outcome":"ok"', b'"outcome":"denied"')  # type: ignore[arg-type]
    assert forged != bytes(body)  # type: ignore[arg-type]
    _sql(pg_url, "UPDATE ledger_events SET body = %s WHERE seq = 2", forged)
    _sql(pg_url, "UPDATE artifacts SET size = size + 1 WHERE id = %s", info.id)
    with reopen(root) as ws:
        assert any("event 2" in p for p in ws.audit_verify().problems)
        with pytest.raises(IntegrityError):
            ws.read_bytes(info.id)


def test_on_postgres_a_new_database_gets_the_schema_the_migrations_build(
    postgres_socket: Path,
) -> None:
    from sealml.db import Database

    from ..test_style import schema_of
    from .conftest import new_database

    migrated = Database(new_database(postgres_socket), create=True)
    migrated.migrate()
    created = Database(new_database(postgres_socket), create=True)
    created.upgrade()
    try:
        assert created.current_revision() == migrated.current_revision()
        assert schema_of(created) == schema_of(migrated)
    finally:
        migrated.dispose()
        created.dispose()


def test_key_rotations_while_others_seal_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    """Writers keep sealing while an administrator rotates the KEKs, and then the workspace
    key: on PostgreSQL a re-wrap and a commit can interleave (rows are locked, not the
    table), so this is where the ledger fence has to hold."""
    root = tmp_path / "ws"
    create(root, pg_url).close()
    stop = threading.Event()

    def seal(worker: int) -> None:
        with reopen(root) as ws:
            n = 0
            while not stop.is_set() or n < 3:
                ws.put(io.BytesIO(f"{worker}:{n}".encode()), "other", f"w{worker}-{n}")
                n += 1

    with concurrently(*(functools.partial(seal, w) for w in range(2))) as errors:
        with reopen(root) as admin:
            for _ in range(3):
                admin.rotate_keys()
            admin.rotate_workspace_key()
            admin.rotate_keys()
        stop.set()
    assert not errors
    with reopen(root) as ws:
        store = ws.verify_store()
        assert store.ok and len(ws.ls()) >= 6
        report = ws.audit_verify()
        assert report.ok, report.problems


def test_principals_read_while_others_change_them_never_look_restored(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL reads each statement at its own moment: a principal change committed
    between reading a row and reading the checkpoint that anchors it is no tampering."""
    root = tmp_path / "ws"
    with create(root, pg_url) as ws:
        ws.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    done = threading.Event()

    def change() -> None:
        try:
            with reopen(root) as admin:
                for n in range(30):
                    admin.set_user_roles("dana", ["auditor" if n % 2 else "data-scientist"])
        finally:
            done.set()

    def read() -> None:
        with reopen(root) as reader:
            while not done.is_set():
                with reader.db.read() as session:
                    reader.principals.get(session, "dana")
                    reader.principals.all(session)

    with concurrently(change, read, read) as errors:
        pass
    assert not errors, errors[0]
    with reopen(root) as ws:
        assert ws.audit_verify().ok
