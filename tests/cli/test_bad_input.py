"""Bad values get a one-line error naming the option, exit 2, before anything is asked
or done."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from sealml import Workspace
from sealml.errors import UsageError
from sealml.serving.server import Listen
from sealml.serving.tls import TlsFiles, dev_tls

from ..conftest import admin_env


def _one_line_error(result: Any, *needles: str) -> None:
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_audit_outcome_must_be_known(workspace: Workspace, cli: Any) -> None:
    for command in ("show", "export"):
        result = cli("audit", command, "--outcome", "maybe", env=admin_env())
        _one_line_error(result, "--outcome", "ok, denied, failed", "'maybe'")
    assert cli("audit", "show", "--outcome", "denied", env=admin_env()).code == 0


@pytest.mark.parametrize("window", ["-5", "3x", "5s", "0", "99999999999999999999999"])
def test_monitor_window_names_itself(workspace: Workspace, cli: Any, window: str) -> None:
    result = cli("monitor", "run", "some-model", "--window", window, env=admin_env())
    _one_line_error(result, "--window", "row count")


def test_user_add_checks_name_and_roles_before_asking_for_a_password(
    workspace: Workspace, cli: Any
) -> None:
    no_password = admin_env(SEALML_NEW_PASSWORD=None)  # type: ignore[arg-type]
    _one_line_error(cli("user", "add", "bob", "--role", "bogus", env=no_password), "'bogus'")
    _one_line_error(cli("user", "add", "../bob", "--role", "auditor", env=no_password), "name")
    _one_line_error(cli("user", "add", "admin", "--role", "auditor", env=no_password), "exists")
    asked = cli("user", "add", "bob", "--role", "auditor", env=no_password)
    _one_line_error(asked, "SEALML_NEW_PASSWORD")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not: [a, mapping", "not valid YAML"),
        ("- a\n- list\n", "expected a mapping with a 'columns' section, found a list"),
        ("", "found nothing"),
        ("42\n", "found a single value"),
    ],
)
def test_schema_that_is_not_a_mapping(cli: Any, tmp_path: Path, content: str, needle: str) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(content)
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    result = cli("data", "validate", str(data), "--schema", str(schema))
    _one_line_error(result, f"schema file {schema}", needle)


def test_unusable_tls_files_are_one_clear_error(tmp_path: Path) -> None:
    good = dev_tls(tmp_path / "tls", "127.0.0.1")
    other = dev_tls(tmp_path / "other", "127.0.0.1")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert "ssl_certfile" in Listen("127.0.0.1", 1, good).uvicorn_options()
    for files, needle in [
        (TlsFiles(junk, good.key), "cannot use the TLS certificate"),
        (TlsFiles(good.cert, junk), "cannot use the TLS certificate"),
        (TlsFiles(good.cert, other.key), "does not match"),
        (TlsFiles(good.cert, good.key, client_ca=junk), "client CA"),
        (TlsFiles(good.cert, good.key, client_ca=tmp_path / "none.pem"), "client CA"),
    ]:
        with pytest.raises(UsageError, match=needle):
            Listen("127.0.0.1", 1, files).uvicorn_options()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:8192], "database disk image is malformed"),
        (lambda data: b"garbage", "file is not a database"),
    ],
)
def test_a_damaged_database_is_one_clear_error(
    workspace: Workspace, cli: Any, damage: Any, reason: str
) -> None:
    workspace.put(io.BytesIO(b"rows"), "dataset", "rows")
    workspace.close()
    database = workspace.root / ".sealml" / "sealml.db"
    damaged = damage(database.read_bytes())
    database.write_bytes(damaged)
    result = cli("ls", env=admin_env())
    _one_line_error(result, "cannot be used", reason)
    assert database.read_bytes() == damaged  # nothing was rewritten
