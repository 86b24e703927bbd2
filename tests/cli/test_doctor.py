"""`sealml doctor`: each check finds what it is for, on real files, and says what to do."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealml import Secret, Workspace

from ..conftest import admin_env


def _doctor(cli: Any) -> tuple[int, dict[str, dict[str, str]]]:
    result = cli("doctor", "--json", env=admin_env())
    assert result.code in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is (result.code == 0)
    return result.code, {c["check"]: c for c in report["checks"]}


def _sealed(workspace: Workspace) -> Path:
    workspace.put(io.BytesIO(b"age,income\n41,52000\n" * 100), "dataset", "rows")
    workspace.close()
    return next(p for p in (workspace.root / ".sealml" / "blobs").rglob("*") if p.is_file())


def test_a_fresh_workspace_is_healthy(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    code, checks = _doctor(cli)
    assert code == 0
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert checks["sealed blobs"]["detail"].startswith("1 present")
    shown = cli("doctor", env=admin_env())
    assert shown.code == 0 and "healthy" in shown.stdout


def test_files_other_users_can_reach_fail(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    keystore = workspace.root / ".sealml" / "keystore.json"
    keystore.chmod(0o644)  # inside a 0700 folder: nobody else can reach it yet
    assert _doctor(cli)[1]["private files"]["status"] == "ok"
    (workspace.root / ".sealml").chmod(0o755)
    assert _doctor(cli)[1]["private files"]["status"] == "ok"  # the workspace folder is 0700
    workspace.root.chmod(0o755)
    code, checks = _doctor(cli)
    assert code == 1 and checks["private files"]["status"] == "fail"
    assert "keystore.json (0644)" in checks["private files"]["detail"]
    assert ".sealml (0755)" in checks["private files"]["detail"]
    assert "sealml.db" not in checks["private files"]["detail"]  # still 0600


def test_the_users_sealml_state_is_checked_too(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    state = Path(os.environ["SEALML_STATE_DIR"])
    (state / "kept").mkdir(mode=0o700)
    stray = state / "kept" / "copied-by-hand.note"
    stray.write_text("a checkpoint note")
    stray.chmod(0o644)
    assert _doctor(cli)[1]["private files"]["status"] == "ok"  # kept/ is 0700
    for folder in (state, state / "kept"):
        folder.chmod(0o755)
    code, checks = _doctor(cli)
    assert code == 1 and f"{stray} (0644)" in checks["private files"]["detail"]


def test_missing_and_truncated_blobs_fail(workspace: Workspace, cli: Any) -> None:
    blob = _sealed(workspace)
    with blob.open("r+b") as handle:
        handle.truncate(blob.stat().st_size - 1)
    code, checks = _doctor(cli)
    assert code == 1 and "wrong size" in checks["sealed blobs"]["detail"]
    blob.unlink()
    code, checks = _doctor(cli)
    assert code == 1 and "missing" in checks["sealed blobs"]["detail"]


def test_old_partial_writes_and_unapproved_policy_warn(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    partial = workspace.root / ".sealml" / "blobs" / "tmp" / "0123.part"
    partial.write_bytes(b"ciphertext")
    day_and_more = time.time() - 90_000
    os.utime(partial, (day_and_more, day_and_more))
    config = workspace.root / "sealml.toml"
    config.write_text(
        config.read_text() + "\n[registry.gates.staging]\nrequire_evaluation = true\n"
    )
    code, checks = _doctor(cli)
    assert code == 0  # warnings only
    assert checks["interrupted writes"]["status"] == "warn"
    assert checks["policy"]["status"] == "warn" and "policy approve" in checks["policy"]["detail"]


def test_a_rolled_back_ledger_fails(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute(
            "DELETE FROM ledger_events WHERE seq = (SELECT MAX(seq) FROM ledger_events)"
        )
    connection.close()
    code, checks = _doctor(cli)
    assert code == 1 and checks["audit ledger"]["status"] == "fail"


def test_checks_a_person_may_not_run_are_warnings(workspace: Workspace, cli: Any) -> None:
    workspace.config.access.roles["reader"] = ["dataset:read"]
    workspace.approve_policy()
    workspace.add_user("rita", ["reader"], password=Secret("rita-password"))
    _sealed(workspace)
    result = cli(
        "doctor", "--json", env=admin_env(SEALML_USER="rita", SEALML_PASSWORD="rita-password")
    )
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.code == 0
    for name in ("sealed blobs", "audit ledger"):
        assert checks[name]["status"] == "warn" and "not checked" in checks[name]["detail"]
    assert "rows" not in checks["sealed blobs"]["detail"]  # no artifact named to her


def test_data_keys_under_a_kek_no_longer_held_fail(workspace: Workspace, cli: Any) -> None:
    _sealed(workspace)
    assert _doctor(cli)[1]["key-encryption keys"]["status"] == "ok"
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE data_keys SET kek_id = 'local:99'")
    connection.close()
    code, checks = _doctor(cli)
    assert code == 1 and "local:99" in checks["key-encryption keys"]["detail"]


def test_installed_packages_named_by_an_advisory_fail(
    workspace: Workspace, cli: Any, tmp_path: Path
) -> None:
    import zipfile
    from importlib import metadata

    def osv(path: Path, *events: dict[str, str]) -> Path:
        with zipfile.ZipFile(path, "w") as archive:
            affected = {"package": {"ecosystem": "PyPI", "name": "SQLAlchemy"}}
            advisory = {"id": "PYSEC-T", "affected": [{**affected, "ranges": [
                {"type": "ECOSYSTEM", "events": list(events)}]}]}  # fmt: skip
            archive.writestr("PYSEC-T.json", json.dumps(advisory))
        return path

    installed = metadata.version("sqlalchemy")
    bad = osv(tmp_path / "bad.zip", {"introduced": "0"})
    result = cli("doctor", "--advisories", str(bad), "--json", env=admin_env())
    assert result.code == 1, result.stderr
    check = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["known vulnerabilities"]
    assert check["status"] == "fail" and f"sqlalchemy {installed} (PYSEC-T)" in check["detail"]
    fixed = osv(tmp_path / "fixed.zip", {"introduced": "0"}, {"fixed": installed})
    result = cli("doctor", "--advisories", str(fixed), "--json", env=admin_env())
    assert result.code == 0, result.stdout


def _days_later(monkeypatch: Any, days: int) -> None:
    """Make the doctor's clock read *days* ahead."""
    from datetime import timedelta

    from sealml import doctor

    later = datetime.now(UTC) + timedelta(days=days)

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return later

    monkeypatch.setattr(doctor, "datetime", Later)


def test_signing_keys_older_than_allowed_are_warned_about(
    workspace: Workspace, monkeypatch: Any
) -> None:
    from sealml import doctor

    def check() -> dict[str, str]:
        found = {f.check: f for f in doctor.diagnose(workspace)}["signing key age"]
        return {"status": found.status, "detail": found.detail}

    assert check()["status"] == "ok"
    _days_later(monkeypatch, 400)
    aged = check()
    assert aged["status"] == "warn" and "admin" in aged["detail"] and "365 days" in aged["detail"]
    before = workspace.require_actor().principal.key_since
    _, rotated, _ = workspace.rotate_signing_key(password=Secret("admin-password-1"))
    assert rotated.key_since > before  # the rotation starts the key's age anew


def test_an_old_workspace_key_is_warned_about(workspace: Workspace, monkeypatch: Any) -> None:
    from sealml import doctor

    def check() -> tuple[str, str]:
        found = {f.check: f for f in doctor.diagnose(workspace)}["workspace key age"]
        return found.status, found.detail

    assert check()[0] == "ok"
    with monkeypatch.context() as later:
        _days_later(later, 400)
        status, detail = check()
    assert status == "warn" and "rotate-workspace-key" in detail
    workspace.rotate_workspace_key()
    _days_later(monkeypatch, 200)
    assert check()[0] == "ok"  # the rotation starts its age anew


def test_unsigned_and_old_api_keys_are_reported(workspace: Workspace, monkeypatch: Any) -> None:
    from sealml import doctor

    def check() -> tuple[str, str]:
        found = {f.check: f for f in doctor.diagnose(workspace)}["API keys"]
        return found.status, found.detail

    forever, _ = workspace.create_api_key("forever")
    workspace.create_api_key("monthly", expires_at="2999-01-01T00:00:00.000000Z")
    assert check() == ("ok", "2 valid, all signed")
    _days_later(monkeypatch, 400)
    status, detail = check()
    assert status == "warn" and forever.id in detail and "apikey rotate" in detail
    monkeypatch.undo()
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE api_keys SET attestation = NULL WHERE id = ?", (forever.id,))
    connection.close()
    status, detail = check()
    assert status == "fail" and forever.id in detail and "revoke them" in detail
