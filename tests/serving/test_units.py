"""API-key format and checks, token buckets, the dev TLS files, and the apikey commands."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sealml.ledger import EventFilter
from sealml.serving import apikeys
from sealml.serving.apikeys import ApiKey, KeyRejectedError, KeyRing, StoredKey
from sealml.serving.limits import MemoryLimiter
from sealml.serving.tls import dev_tls

from ..conftest import admin_env


def _ring(**changes: Any) -> tuple[KeyRing, str]:
    key_id, text, salt, digest = apikeys.new_key()
    record = ApiKey(key_id, "k", "admin", ("predict",), ("*",), "2026-01-01T00:00:00.000000Z")
    record = ApiKey(**{**vars(record), **changes})
    return KeyRing([StoredKey(record, salt, digest)]), text


def _at(moment: str) -> float:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()


def test_key_checks() -> None:
    ring, text = _ring()
    assert ring.authenticate(text, _at("2026-06-01T00:00:00")).id == text.split("_")[1]
    reasons = {}
    for name, presented in {
        "malformed": "sml_short",
        "unknown": "sml_000000000000_" + "A" * 43,
        "wrong secret": text[:-1] + ("A" if text[-1] != "A" else "B"),
    }.items():
        with pytest.raises(KeyRejectedError) as caught:
            ring.authenticate(presented, _at("2026-06-01T00:00:00"))
        reasons[name] = caught.value.reason
    assert reasons == {
        "malformed": "malformed",
        "unknown": "unknown",
        "wrong secret": "wrong secret",
    }
    expiring, text = _ring(expires_at="2026-03-01T00:00:00.000000Z")
    assert expiring.authenticate(text, _at("2026-02-28T23:59:59"))
    with pytest.raises(KeyRejectedError, match="expired"):
        expiring.authenticate(text, _at("2026-03-01T00:00:00"))
    revoked, text = _ring(revoked_at="2026-02-01T00:00:00.000000Z")
    with pytest.raises(KeyRejectedError, match="revoked"):
        revoked.authenticate(text, _at("2026-01-02T00:00:00"))
    key_id, _, salt, digest = apikeys.new_key()
    stored = StoredKey(ApiKey(key_id, "k", "admin", ("predict",), ("*",), "now"), salt, digest)
    assert "digest" not in repr(stored) and repr(digest) not in repr(stored)


def test_token_bucket() -> None:
    limiter = MemoryLimiter()

    async def take(n: int) -> list[float]:
        return [await limiter.take("k", rate=1.0, burst=3) for _ in range(n)]

    waits = asyncio.run(take(5))
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert all(0.5 < w <= 1.0 for w in waits[3:])
    assert asyncio.run(limiter.take("other", rate=1.0, burst=3)) == 0.0


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://localhost/0", True),
        ("unix:///run/redis/redis.sock", True),
        ("rediss://cache.example.org:6380/0", True),
        ("redis://cache.example.org:6379/0", False),
        ("http://cache.example.org/", False),
    ],
)
def test_a_shared_limiter_beyond_this_machine_needs_tls(url: str, allowed: bool) -> None:
    from sealml.errors import ConfigError
    from sealml.serving.limits import check_redis_url

    if allowed:
        check_redis_url(url)
    else:
        with pytest.raises(ConfigError, match="rediss://"):
            check_redis_url(url)


def test_dev_tls_files(tmp_path: Path) -> None:
    files = dev_tls(tmp_path / "tls", "127.0.0.1")
    assert files.ca is not None
    for key in (files.key, tmp_path / "tls" / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    before = files.cert.read_bytes()
    assert dev_tls(tmp_path / "tls", "127.0.0.1").cert.read_bytes() == before  # reused


def test_apikey_commands(workspace: Any, cli: Any) -> None:
    created = cli("apikey", "create", "billing", "--scope", "predict", "--model", "credit",
                  "--expires", "30d", "--json", env=admin_env())  # fmt: skip
    assert created.code == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["key"].startswith(f"sml_{record['id']}_") and record["scopes"] == ["predict"]
    listed = cli("apikey", "ls", "--json", env=admin_env())
    assert record["key"] not in listed.stdout
    secret = record["key"].split("_", 2)[2]
    assert secret not in listed.stdout
    assert json.loads(listed.stdout)[0]["state"] == "active"
    assert secret.encode() not in (workspace.root / ".sealml" / "sealml.db").read_bytes()
    bad = cli("apikey", "create", "x", "--scope", "root", env=admin_env())
    assert bad.code == 2 and "scopes must be" in bad.stderr
    bad = cli("apikey", "create", "x", "--expires", "yesterday", env=admin_env())
    assert bad.code == 2 and "--expires" in bad.stderr
    bad = cli("apikey", "create", "x", "--expires", "2020-01-01", env=admin_env())
    assert bad.code == 2 and "past" in bad.stderr
    revoked = cli("apikey", "revoke", record["id"], "--reason", "rotated", env=admin_env())
    assert revoked.code == 0
    assert (
        json.loads(cli("apikey", "ls", "--json", env=admin_env()).stdout)[0]["state"] == "revoked"
    )
    again = cli("apikey", "revoke", record["id"], "--reason", "rotated", env=admin_env())
    assert again.code == 2 and "already revoked" in again.stderr
    unknown = cli("apikey", "revoke", "nope", "--reason", "x", env=admin_env())
    assert unknown.code == 2


@pytest.mark.parametrize(
    "edit",
    [
        'UPDATE api_keys SET scopes = \'["predict", "admin"]\'',  # a scope granted in SQL
        "UPDATE api_keys SET models = '[\"*\"]'",
        "UPDATE api_keys SET revoked_at = NULL",  # a revocation undone
        "UPDATE api_keys SET expires_at = '2999-01-01T00:00:00.000000Z'",
        "UPDATE api_keys SET digest = X'00'",  # another secret
        "UPDATE api_keys SET attestation = NULL",  # as written before keys were signed
    ],
)
def test_an_api_key_edited_in_the_database_is_refused(workspace: Any, edit: str) -> None:
    import sqlite3

    kept, _ = workspace.create_api_key("kept", models=["other"])
    key, _ = workspace.create_api_key("billing", models=["credit"], expires_at="2998-01-01")
    if "revoked_at" in edit:
        workspace.revoke_api_key(key.id, "leaked")
    assert {s.key.id for s in workspace.stored_api_keys()} == {kept.id, key.id}
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute(f"{edit} WHERE id = ?", (key.id,))
    connection.close()
    assert {s.key.id for s in workspace.stored_api_keys()} == {kept.id}
    listed = {k.id: k for k in workspace.api_keys()}
    assert not listed[key.id].verified and listed[key.id].scopes == ()
    assert listed[kept.id].verified


def test_a_key_row_restored_from_before_its_revocation_stays_revoked(workspace: Any) -> None:
    import sqlite3

    key, _ = workspace.create_api_key("billing")
    (loaded,) = workspace.stored_api_keys()  # a server's first read, before the revocation
    assert loaded.key.revoked_at is None
    database = workspace.root / ".sealml" / "sealml.db"
    connection = sqlite3.connect(database)
    saved = connection.execute("SELECT revoked_at, attestation FROM api_keys").fetchone()
    connection.close()
    workspace.revoke_api_key(key.id, "leaked")
    connection = sqlite3.connect(database)
    with connection:  # the whole row as it was, its valid signature included
        connection.execute("UPDATE api_keys SET revoked_at = ?, attestation = ?", saved)
    connection.close()
    (stored,) = workspace.stored_api_keys()  # reads only the events added since
    assert stored.key.verified and stored.key.revoked_at is not None
    from sealml import Secret, Workspace

    from ..conftest import PASSPHRASE

    fresh = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    fresh.actor = workspace.actor
    (again,) = fresh.stored_api_keys()  # another server, reading the whole ledger
    assert again.key.revoked_at is not None
    fresh.close()


def test_a_key_is_rotated_with_a_grace_period(workspace: Any, cli: Any) -> None:
    created = cli("apikey", "create", "billing", "--model", "credit", "--expires", "30d",
                  "--json", env=admin_env())  # fmt: skip
    old = json.loads(created.stdout)
    rotated = cli("apikey", "rotate", old["id"], "--grace", "2h", "--json", env=admin_env())
    assert rotated.code == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["key"].startswith(f"sml_{new['id']}_") and new["id"] != old["id"]
    assert (new["name"], new["scopes"], new["models"]) == ("billing", ["predict"], ["credit"])
    assert new["expires_at"][:10] == old["expires_at"][:10]  # the same 30-day lifetime
    assert new["replaces"]["expires_at"] < old["expires_at"]  # the old one ends in 2 h
    stored = {s.key.id: s.key for s in workspace.stored_api_keys()}
    assert stored[old["id"]].verified and stored[old["id"]].revoked_at is None
    assert stored[new["id"]].verified
    bad = cli("apikey", "rotate", old["id"], "--grace", "soon", env=admin_env())
    assert bad.code == 2 and "--grace" in bad.stderr
    assert cli("apikey", "revoke", old["id"], "--reason", "done", env=admin_env()).code == 0
    again = cli("apikey", "rotate", old["id"], env=admin_env())
    assert again.code == 2 and "no longer valid" in again.stderr
    events = workspace.audit_events(EventFilter(action="apikey.rotate"))
    assert [e.fields()["details"]["replaced_by"] for e in events] == [new["id"]]
