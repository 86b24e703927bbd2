"""Changing credentials: passwords, roles, TOTP resets and the keystore passphrase."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path

import pytest

from sealml import Secret, Workspace
from sealml.access import totp
from sealml.errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from sealml.ledger import EventFilter

from ..conftest import PASSPHRASE, reopen

DANA = "dana-password"


@pytest.fixture
def dana(workspace: Workspace) -> Path:
    workspace.add_user("dana", ["data-scientist"], password=Secret(DANA))
    return workspace.root


def outcomes(ws: Workspace, action: str) -> list[str]:
    return [e.fields()["outcome"] for e in ws.audit_events(EventFilter(action=action))]


def test_a_new_password_unlocks_the_same_key_and_ends_sessions(dana: Path) -> None:
    with reopen(dana, "dana", DANA) as ws:
        model = ws.put(io.BytesIO(b"weights"), "model", "m")
        ticket = ws.start_session()
        fingerprint = ws.require_actor().principal.public_key.fingerprint()
        with pytest.raises(AuthenticationError, match="current password is wrong"):
            ws.change_password(Secret("not-the-password"), Secret("new-dana-password"))
        with pytest.raises(UsageError, match="at least 8"):
            ws.change_password(Secret(DANA), Secret("short"))
        with pytest.raises(UsageError, match="same"):
            ws.change_password(Secret(DANA), Secret(DANA))
        ws.change_password(Secret(DANA), Secret("new-dana-password"))
    fresh = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError):
        fresh.login("dana", Secret(DANA))
    with pytest.raises(AuthenticationError):
        fresh.resume_session(ticket)
    actor = fresh.login("dana", Secret("new-dana-password"))
    assert actor.principal.public_key.fingerprint() == fingerprint
    assert fresh.verify(model.id).creator == "dana"  # what dana signed still verifies
    fresh.close()
    with reopen(dana) as admin:
        assert outcomes(admin, "user.password") == ["denied", "ok"]


def test_a_service_has_no_password_to_change(workspace: Workspace) -> None:
    _, key = workspace.add_user("scorer", ["service"], service=True)
    assert key is not None
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    ws.login_with_key("scorer", key)
    with pytest.raises(UsageError, match="service"):
        ws.change_password(Secret("whatever-1"), Secret("whatever-2"))


def test_roles_change_at_once_and_are_attested(workspace: Workspace, dana: Path) -> None:
    with reopen(dana, "dana", DANA) as ws:
        with pytest.raises(PermissionDeniedError):
            ws.set_user_roles("dana", ["admin"])  # nobody grants themselves roles
        ticket = ws.start_session()
    before, after = workspace.set_user_roles("dana", ["auditor", "data-steward"])
    assert before.roles == ("data-scientist",)
    assert after.roles == ("auditor", "data-steward")
    resumed = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    assert resumed.resume_session(ticket).principal.roles == ("auditor", "data-steward")
    resumed.put(io.BytesIO(b"rows"), "dataset", "rows")  # data-steward may now write data
    resumed.close()
    with pytest.raises(UsageError, match="unknown role"):
        workspace.set_user_roles("dana", ["wizard"])
    with pytest.raises(UsageError, match="at least one role"):
        workspace.set_user_roles("dana", [])
    with pytest.raises(UsageError, match="user:admin away from you"):
        workspace.set_user_roles("admin", ["auditor"])
    with pytest.raises(NotFoundError):
        workspace.set_user_roles("nobody", ["auditor"])
    events = workspace.audit_events(EventFilter(action="user.roles", outcome="ok"))
    assert [e.fields()["details"]["after"] for e in events] == [["auditor", "data-steward"]]
    connection = sqlite3.connect(dana / ".sealml" / "sealml.db")
    with connection:  # a grant written straight to the database is not attested
        connection.execute("UPDATE principals SET roles = '[\"admin\"]' WHERE name = 'dana'")
    connection.close()
    with pytest.raises(IntegrityError, match="dana"):
        reopen(dana, "dana", DANA)


def test_a_long_running_process_sees_its_principal_as_it_is_now(
    workspace: Workspace, dana: Path
) -> None:
    """What a server or a monitoring watch calls before each round: changed roles apply,
    a password reset strips them, a disable or a new key stops the process."""
    with reopen(dana, "dana", DANA) as ws:
        assert ws.refresh_actor().principal.roles == ("data-scientist",)
        workspace.set_user_roles("dana", ["auditor"])
        assert ws.refresh_actor().principal.roles == ("auditor",)
        with pytest.raises(PermissionDeniedError):
            ws.put(io.BytesIO(b"rows"), "dataset", "rows")  # the old role's grant is gone
        workspace.reset_password("dana", Secret("temporary-password"))
        with pytest.raises(AuthenticationError, match="new signing key"):
            ws.refresh_actor()  # a reset gives a new key: the process holds the old one
    with reopen(dana, "dana", "temporary-password") as ws:
        assert ws.refresh_actor().principal.roles == ()  # until dana sets her own password
        workspace.set_user_disabled("dana", True)
        with pytest.raises(AuthenticationError, match="dana was disabled"):
            ws.refresh_actor()


def test_totp_reset_lets_a_user_enrol_again(
    workspace: Workspace, dana: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with reopen(dana, "dana", DANA) as ws:
        ws.totp_enroll()
        with pytest.raises(UsageError, match="give a current code"):
            ws.totp_enroll()  # the lost device's code would be needed
        with pytest.raises(PermissionDeniedError):
            ws.reset_totp("dana")
    with pytest.raises(UsageError, match="another user admin"):
        workspace.reset_totp("admin")
    workspace.reset_totp("dana")
    with pytest.raises(NotFoundError, match="no TOTP"):
        workspace.reset_totp("dana")
    with reopen(dana, "dana", DANA) as ws:
        secret = ws.totp_enroll().secret
        later = time.time() + totp.PERIOD
        monkeypatch.setattr(totp, "time", type("At", (), {"time": staticmethod(lambda: later)}))
        ws.totp_check(totp.current_code(secret, later))
    assert outcomes(workspace, "user.totp-reset") == ["denied", "ok"]


def test_a_new_passphrase_opens_the_same_keys(workspace: Workspace, tmp_path: Path) -> None:
    data = workspace.put(io.BytesIO(b"rows"), "dataset", "rows")
    keystore = workspace.root / ".sealml" / "keystore.json"
    old_file = keystore.read_bytes()
    with pytest.raises(AuthenticationError, match="wrong keystore passphrase"):
        workspace.change_passphrase(Secret("not it"), Secret("a new passphrase"))
    assert keystore.read_bytes() == old_file  # a refusal changes nothing
    workspace.change_passphrase(Secret(PASSPHRASE), Secret("a new passphrase"))
    assert json.loads(keystore.read_bytes())["kdf"]["salt"] != json.loads(old_file)["kdf"]["salt"]
    assert keystore.stat().st_mode & 0o777 == 0o600
    workspace.close()
    with pytest.raises(AuthenticationError, match="wrong keystore passphrase"):
        reopen(workspace.root).get(data.id, tmp_path / "old")
    ws = Workspace.open(workspace.root, passphrase=Secret("a new passphrase"))
    ws.login("admin", Secret("admin-password-1"))
    ws.get(data.id, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"rows"
    assert ws.audit_verify().ok  # the checkpoint key (a keystore secret) moved along
    assert outcomes(ws, "keys.passphrase") == ["denied", "ok"]
    ws.close()


def test_only_key_admins_change_the_passphrase(dana: Path) -> None:
    with reopen(dana, "dana", DANA) as ws, pytest.raises(PermissionDeniedError):
        ws.change_passphrase(Secret(PASSPHRASE), Secret("a new passphrase"))


def test_a_person_rotates_their_key_and_what_they_signed_still_verifies(
    dana: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    with reopen(dana, "dana", DANA) as ws:
        before_put = ws.put(io.BytesIO(b"weights"), "model", "m")
        ws.sign_path(model, tmp_path / "model.sig")
        ticket = ws.start_session()
        old = ws.require_actor().principal.public_key
        with pytest.raises(AuthenticationError, match="password is wrong"):
            ws.rotate_signing_key(password=Secret("not-the-password"))
        with pytest.raises(UsageError, match="password"):
            ws.rotate_signing_key()
        _, after, returned = ws.rotate_signing_key(password=Secret(DANA))
        assert returned is None  # a person's key stays sealed under their password
        assert after.public_key != old and after.retired_keys == (old,)
        after_put = ws.put(io.BytesIO(b"more"), "model", "m2")  # signed with the new key
    fresh = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError):
        fresh.resume_session(ticket)  # sessions end with the old key
    actor = fresh.login("dana", Secret(DANA))
    assert actor.principal.public_key == after.public_key
    assert fresh.verify(before_put.id).creator == "dana"
    assert fresh.verify(after_put.id).creator == "dana"
    assert fresh.verify_path(model, tmp_path / "model.sig")[1] == "dana"
    fresh.close()
    with reopen(dana) as admin:
        events = admin.audit_events(EventFilter(action="user.rotate-key"))
    assert [e.fields()["outcome"] for e in events] == ["denied", "ok"]
    assert events[1].fields()["details"]["retired"] == old.fingerprint()
    connection = sqlite3.connect(dana / ".sealml" / "sealml.db")
    with connection:  # forgetting the retired key in the database is detected
        connection.execute("UPDATE principals SET retired_keys = NULL WHERE name = 'dana'")
    connection.close()
    with pytest.raises(IntegrityError, match="dana"):
        reopen(dana, "dana", DANA)


def test_a_service_key_is_rotated_by_an_admin(workspace: Workspace, dana: Path) -> None:
    _, old_key = workspace.add_user("scorer", ["service"], service=True)
    assert old_key is not None
    with reopen(dana, "dana", DANA) as ws, pytest.raises(PermissionDeniedError):
        ws.rotate_signing_key("scorer")
    with pytest.raises(UsageError, match="they rotate their own key"):
        workspace.rotate_signing_key("dana")
    before, after, new_key = workspace.rotate_signing_key("scorer")
    assert new_key is not None and new_key.public_key == after.public_key
    assert after.retired_keys == (before.public_key,)
    ws = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError, match="does not belong"):
        ws.login_with_key("scorer", old_key)
    assert ws.login_with_key("scorer", new_key).name == "scorer"
    _, again, newest = ws.rotate_signing_key()  # a service may rotate its own key
    assert newest is not None and again.retired_keys == (before.public_key, after.public_key)
    assert ws.require_actor().signing_key is newest
    ws.close()


def test_an_admin_resets_a_forgotten_password(workspace: Workspace, dana: Path) -> None:
    with reopen(dana, "dana", DANA) as ws:
        signed = ws.put(io.BytesIO(b"weights"), "model", "m")
        ticket = ws.start_session()
        old = ws.require_actor().principal.public_key
        with pytest.raises(PermissionDeniedError):
            ws.reset_password("admin", Secret("taken-over-1"))
    with pytest.raises(UsageError, match="user passwd"):
        workspace.reset_password("admin", Secret("admin-new-password"))
    _, service_key = workspace.add_user("scorer", ["service"], service=True)
    with pytest.raises(UsageError, match="service"):
        workspace.reset_password("scorer", Secret("no-password-1"))
    before, after = workspace.reset_password("dana", Secret("dana-reset-password"))
    assert before.public_key == old and after.retired_keys == (old,)
    fresh = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    with pytest.raises(AuthenticationError):
        fresh.login("dana", Secret(DANA))
    with pytest.raises(AuthenticationError):
        fresh.resume_session(ticket)
    reset = fresh.login("dana", Secret("dana-reset-password"))
    assert reset.principal.public_key != old and reset.principal.password_reset_by == "admin"
    with pytest.raises(PermissionDeniedError, match="admin reset the password of dana"):
        fresh.verify(signed.id)  # nothing but a password change until then
    fresh.rotate_signing_key(password=Secret("dana-reset-password"))
    assert fresh.require_actor().principal.roles == ()  # a new key gives no role back
    with pytest.raises(PermissionDeniedError, match="admin reset the password of dana"):
        fresh.verify(signed.id)
    fresh.change_password(Secret("dana-reset-password"), Secret("dana-own-password"))
    fresh.close()
    fresh = Workspace.open(dana, passphrase=Secret(PASSPHRASE))
    assert fresh.login("dana", Secret("dana-own-password")).principal.password_reset_by is None
    assert fresh.verify(signed.id).creator == "dana"  # signed with the retired key
    fresh.close()
    events = workspace.audit_events(EventFilter(action="user.reset-password"))
    assert [e.fields()["outcome"] for e in events] == ["denied", "ok"]
    refused = workspace.audit_events(EventFilter(principal="dana", outcome="denied"))
    assert refused[-1].fields()["details"]["password_reset_by"] == "admin"
    assert service_key is not None


def test_after_a_reset_a_second_factor_keeps_the_admin_from_finishing_it(
    workspace: Workspace, dana: Path
) -> None:
    """The admin who reset dana's password knows the temporary one; dana enrolled TOTP, so
    setting the final password needs a code the admin does not have."""
    with reopen(dana, "dana", DANA) as ws:
        secret = ws.totp_enroll().secret
    workspace.reset_password("dana", Secret("temporary-password-1"))
    with reopen(dana, "dana", "temporary-password-1") as impostor:
        with pytest.raises(UsageError, match="code from your authenticator"):
            impostor.change_password(Secret("temporary-password-1"), Secret("chosen-by-admin"))
        with pytest.raises(AuthenticationError):
            impostor.change_password(
                Secret("temporary-password-1"), Secret("chosen-by-admin"), "000000"
            )
        with pytest.raises(UsageError, match="set your own first"):
            impostor.totp_enroll()  # nor can a new second factor be slipped in
        impostor.change_password(
            Secret("temporary-password-1"), Secret("dana-own-password"), totp.current_code(secret)
        )
    with reopen(dana, "dana", "dana-own-password") as ws:
        assert ws.require_actor().principal.password_reset_by is None
    assert outcomes(workspace, "auth.totp") == ["denied"]


def test_a_key_reported_compromised_verifies_only_what_came_before(
    workspace: Workspace, dana: Path, tmp_path: Path
) -> None:
    from sealml.clock import utc_now

    _, key = workspace.add_user("scorer", ["service"], service=True)
    assert key is not None
    service = Workspace.open(workspace.root, passphrase=Secret(PASSPHRASE))
    service.login_with_key("scorer", key)
    before = service.put(io.BytesIO(b"before the leak"), "dataset", "before")
    leaked_at = utc_now()
    after = service.put(io.BytesIO(b"made with the stolen key"), "dataset", "after")
    service.close()
    with pytest.raises(UsageError, match="future"):
        workspace.rotate_signing_key("scorer", compromised_since="2999-01-01")
    with pytest.raises(UsageError, match="ISO 8601"):
        workspace.rotate_signing_key("scorer", compromised_since="last tuesday")
    _, rotated, _ = workspace.rotate_signing_key("scorer", compromised_since=leaked_at)
    assert rotated.compromised == ((rotated.retired_keys[0], leaked_at),)
    assert workspace.verify(before.id).name == "before"
    with pytest.raises(IntegrityError, match="compromised since"):
        workspace.verify(after.id)
    with pytest.raises(IntegrityError, match="compromised since"):
        workspace.read_bytes(after.id)
    report = workspace.verify_store()
    assert not report.ok
    assert [c.info.id for c in report.checks if c.status == "failed"] == [after.id]

    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    with reopen(dana, "dana", DANA) as ws:
        ws.sign_path(model, tmp_path / "model.sig")
        ws.rotate_signing_key(password=Secret(DANA))  # retired, not compromised
        assert ws.verify_path(model, tmp_path / "model.sig")[1] == "dana"
        ws.sign_path(model, tmp_path / "again.sig")
        ws.rotate_signing_key(password=Secret(DANA), compromised_since=utc_now())
        with pytest.raises(IntegrityError, match="no trusted time"):
            ws.verify_path(model, tmp_path / "again.sig")  # outside the ledger: no time
        assert ws.verify_path(model, tmp_path / "model.sig")[1] == "dana"
