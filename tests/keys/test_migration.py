"""`sealml keys migrate`: a workspace's KEKs move from its keystore into a PKCS#11 token,
and no state the move passes through (interrupted, or raced by a process that has not seen
it) leaves an artifact unreadable."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.db.models import DataKeyRow
from sealml.doctor import _keys
from sealml.errors import AuthenticationError, ConfigError, PermissionDeniedError, UsageError
from sealml.keys.pkcs11 import TokenSettings
from sealml.ledger import EventFilter
from sealml.workspace import keyops

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, admin_env

Token = tuple[TokenSettings, Secret]
CONTENT = {"rows": b"age,income\n41,52000\n", "model": b"\x00weights" * 500}


def _local_workspace(root: Path) -> tuple[Workspace, dict[str, str]]:
    ws = Workspace.init(
        root, passphrase=Secret(PASSPHRASE), admin_password=Secret(ADMIN_PASSWORD), kdf=FAST_PARAMS
    )
    ids = {name: ws.put(io.BytesIO(data), "other", name).id for name, data in CONTENT.items()}
    config = root / "sealml.toml"
    config.write_text("# reviewed by the platform team\n" + config.read_text())
    return ws, ids


def _opened(root: Path, softhsm: Token, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("SEALML_HSM_PIN", softhsm[1].reveal().decode())
    ws = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    ws.login("admin", Secret(ADMIN_PASSWORD))
    return ws


def _wrapping(ws: Workspace) -> set[str]:
    with ws.db.read() as session:
        return set(session.execute(select(DataKeyRow.kek_id)).scalars())


def _all_readable(ws: Workspace, ids: dict[str, str], folder: Path) -> None:
    for name, artifact_id in ids.items():
        ws.get(artifact_id, folder / name, overwrite=True)
        assert (folder / name).read_bytes() == CONTENT[name]
    assert ws.verify_store().ok


def test_the_keks_move_into_the_token_and_every_artifact_still_opens(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    ws, ids = _local_workspace(root)
    blobs = {p: p.read_bytes() for p in (root / ".sealml" / "blobs").rglob("*") if p.is_file()}
    result = ws.migrate_keys_to_token(*softhsm)
    assert result == {
        "token": softhsm[0].token, "kek": "hsm:1", "rewrapped": 2, "destroyed": ["local:1"],
    }  # fmt: skip
    assert _wrapping(ws) == {"hsm:1"}
    ws.close()
    text = (root / "sealml.toml").read_text()
    assert text.startswith("# reviewed by the platform team\n")  # the file is edited, not rewritten
    assert 'provider = "pkcs11"' in text and f'hsm_token = "{softhsm[0].token}"' in text
    keystore = json.loads((root / ".sealml" / "keystore.json").read_text())
    assert [k["id"] for k in keystore["keks"]] == ["local:2"]  # unused; local:1 is gone
    after = {p: p.read_bytes() for p in (root / ".sealml" / "blobs").rglob("*") if p.is_file()}
    assert after == blobs  # only the small wrapped keys changed
    again = _opened(root, softhsm, monkeypatch)
    _all_readable(again, ids, tmp_path)
    assert _keys(again).status == "ok"
    [event] = again.audit_events(EventFilter(action="keys.migrate"))
    details = event.fields()["details"]
    assert details["rewrapped"] == 2 and details["destroyed"] == ["local:1"]
    assert again.audit_verify().ok
    assert again.rotate_keys()["kek"] == "hsm:2"  # a token workspace from now on
    again.close()


def test_an_interrupted_migration_leaves_everything_readable_and_finishes_when_run_again(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    ws, ids = _local_workspace(root)

    def crash(*args: Any) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(keyops, "rewrap_all", crash)
        with pytest.raises(KeyboardInterrupt):
            ws.migrate_keys_to_token(*softhsm)
    ws.close()
    assert 'provider = "pkcs11"' in (root / "sealml.toml").read_text()
    halfway = _opened(root, softhsm, monkeypatch)
    assert _wrapping(halfway) == {"local:1"}
    _all_readable(halfway, ids, tmp_path)  # the keystore still unwraps what it wrapped
    late = halfway.put(io.BytesIO(b"sealed halfway"), "other", "late")
    assert halfway.info(late.id).id == late.id
    finding = _keys(halfway)
    assert finding.status == "warn" and "keys migrate" in finding.detail
    assert halfway.migrate_keys_to_token(*softhsm)["rewrapped"] == 2
    assert _wrapping(halfway) == {"hsm:1"}
    assert _keys(halfway).status == "ok"
    _all_readable(halfway, ids, tmp_path)
    halfway.close()


def test_a_process_that_has_not_seen_the_migration_seals_nothing_unreadable(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    stale, ids = _local_workspace(root)  # a server that opened the workspace before
    admin = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    admin.login("admin", Secret(ADMIN_PASSWORD))
    admin.migrate_keys_to_token(*softhsm)
    admin.close()
    late = stale.put(io.BytesIO(b"sealed by the stale process"), "other", "late")
    stale.close()
    ids["late"] = late.id
    expected = {**CONTENT, "late": b"sealed by the stale process"}
    fresh = _opened(root, softhsm, monkeypatch)
    assert _wrapping(fresh) == {"hsm:1", "local:2"}  # the keystore's KEK that stayed
    for name, artifact_id in ids.items():
        fresh.get(artifact_id, tmp_path / name, overwrite=True)
        assert (tmp_path / name).read_bytes() == expected[name]
    assert _keys(fresh).status == "warn"
    fresh.migrate_keys_to_token(*softhsm)
    assert _wrapping(fresh) == {"hsm:1"} and _keys(fresh).status == "ok"
    fresh.close()


def test_refusals_change_nothing(softhsm: Token, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws, _ = _local_workspace(root)
    before = {p: p.read_bytes() for p in (root / "sealml.toml", root / ".sealml" / "keystore.json")}
    settings, pin = softhsm
    with pytest.raises(AuthenticationError, match="wrong PIN"):
        ws.migrate_keys_to_token(settings, Secret("0000-0000"))
    with pytest.raises(ConfigError, match="no PKCS#11 token"):
        ws.migrate_keys_to_token(TokenSettings(settings.module, "no-such-token"), pin)
    ws.add_user("dana", ["data-scientist"], password=Secret("dana-password-1"))
    ws.login("dana", Secret("dana-password-1"))
    with pytest.raises(PermissionDeniedError):
        ws.migrate_keys_to_token(settings, pin)
    after = {p: p.read_bytes() for p in before}
    assert after == before and _wrapping(ws) == {"local:1"}
    ws.login("admin", Secret(ADMIN_PASSWORD))
    ws.migrate_keys_to_token(settings, pin)
    with pytest.raises(UsageError, match="from one token to another"):
        ws.migrate_keys_to_token(TokenSettings(settings.module, "another-token"), pin)
    ws.close()


def test_cli_migrate(softhsm: Token, cli: Any, ws_path: Path) -> None:
    settings, pin = softhsm
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    data = ws_path.parent / "rows.csv"
    data.write_text("a,b\n1,2\n")
    assert cli("put", str(data), "--kind", "dataset", env=admin_env()).code == 0
    args = ("keys", "migrate", "--hsm-module", settings.module, "--hsm-token", settings.token)
    wrong = cli(*args, env=admin_env(SEALML_HSM_PIN="0000-0000"))
    assert wrong.code == 2 and wrong.stderr.startswith("error: wrong PIN")
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    moved = cli(*args, "--json", env=env)
    assert moved.code == 0, moved.stderr
    assert json.loads(moved.stdout)["rewrapped"] == 1
    no_pin = cli("get", "rows.csv", "-o", str(ws_path.parent / "out.csv"), env=admin_env())
    assert no_pin.code == 2 and "HSM PIN" in no_pin.stderr
    got = cli("get", "rows.csv", "-o", str(ws_path.parent / "out.csv"), env=env)
    assert got.code == 0 and (ws_path.parent / "out.csv").read_text() == "a,b\n1,2\n"


def test_the_workspace_key_moves_into_the_token_and_rotates_there(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `keys migrate` the workspace key is still the keystore's; rotating it with
    --in-token generates its successor in the token, and the keystore's copy is gone."""
    root = tmp_path / "ws"
    ws, ids = _local_workspace(root)
    saved = ws.audit_checkpoint()
    ws.migrate_keys_to_token(*softhsm)
    moved = ws.rotate_workspace_key(in_token=True)
    assert moved["in_token"]
    keystore = json.loads((root / ".sealml" / "keystore.json").read_text())
    assert "workspace-signing-key" not in keystore["secrets"]
    ws.close()
    again = _opened(root, softhsm, monkeypatch)
    [in_token] = again.token.signing_keys()
    assert in_token.public_key == again.verifier.key
    _all_readable(again, ids, tmp_path)  # signs its checkpoints in the token now
    assert again.rotate_workspace_key()["in_token"]  # token to token
    [successor] = again.token.signing_keys()  # the previous pair was destroyed
    assert successor.public_key != in_token.public_key
    report = again.audit_verify([saved])
    assert report.ok, report.problems
    again.close()


def test_copies_an_interrupted_rotation_left_are_reported_and_destroyed_by_the_next(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after its commit, a rotation into the token leaves the keystore's copy of
    the old workspace key; one killed before its commit leaves a staged pair in the
    token. Neither is ever used; doctor names them and the next rotation destroys them."""
    from sealml.doctor import _workspace_key_age

    root = tmp_path / "ws"
    ws, _ = _local_workspace(root)
    ws.migrate_keys_to_token(*softhsm)

    def lost_power(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(keyops, "set_options", lost_power)
        with pytest.raises(KeyboardInterrupt):
            ws.rotate_workspace_key(in_token=True)
    ws.close()
    again = _opened(root, softhsm, monkeypatch)  # finishes the rotation
    again.token.create_signing_key()  # as a rotation killed before its commit leaves it
    assert len(again.token.signing_keys()) == 2
    assert again.key_summary()["superseded_workspace_keys"] == 2  # keystore copy + pair
    finding = _workspace_key_age(again)
    assert finding.status == "warn" and "2 copy(ies)" in finding.detail
    again.rotate_workspace_key()
    [current] = again.token.signing_keys()
    assert current.public_key == again.verifier.key
    keystore = json.loads((root / ".sealml" / "keystore.json").read_text())
    assert "workspace-signing-key" not in keystore["secrets"]
    assert again.key_summary()["superseded_workspace_keys"] == 0
    assert _workspace_key_age(again).status == "ok"
    assert again.audit_verify().ok
    again.close()
