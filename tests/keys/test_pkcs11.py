"""KEKs in a PKCS#11 token: wrapping inside the token, rotation, destruction, refusals,
and a workspace whose KEKs never leave the token."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    UsageError,
)
from sealml.keys.pkcs11 import Pkcs11Provider, TokenSettings
from sealml.keys.provider import dek_context

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, admin_env
from .conftest import token_workspace

Token = tuple[TokenSettings, Secret]
DEK = bytes(range(32))


def _provider(softhsm: Token) -> Pkcs11Provider:
    return Pkcs11Provider.initialise(*softhsm, uuid.uuid4().hex)


def test_wrapping_happens_in_the_token_and_binds_the_context(softhsm: Token) -> None:
    from pkcs11 import Attribute

    provider = _provider(softhsm)
    wrapped = provider.wrap(DEK, dek_context("a1"))
    assert wrapped.kek_id == "hsm:1" and DEK not in wrapped.blob
    assert provider.unwrap(wrapped, dek_context("a1")) == DEK
    with pytest.raises(IntegrityError):
        provider.unwrap(wrapped, dek_context("a2"))
    flipped = bytearray(wrapped.blob)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        provider.unwrap(type(wrapped)(wrapped.kek_id, bytes(flipped)), dek_context("a1"))
    key = provider._keys["hsm:1"]
    assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
    provider.close()


def test_rotation_and_destruction(softhsm: Token) -> None:
    provider = _provider(softhsm)
    old = provider.wrap(DEK, b"ctx")
    assert provider.rotate() == "hsm:2" and provider.current_kek_id() == "hsm:2"
    assert provider.unwrap(old, b"ctx") == DEK  # still held until destroyed
    with pytest.raises(UsageError):
        provider.destroy(["hsm:2"])
    provider.destroy(["hsm:1"])
    assert provider.kek_ids() == ["hsm:2"]
    with pytest.raises(IntegrityError, match="no longer held"):
        provider.unwrap(old, b"ctx")
    settings, pin = softhsm
    reopened = Pkcs11Provider(settings, pin, provider._label.split(":")[1])
    assert reopened.kek_ids() == ["hsm:2"]  # the destruction is on the token
    provider.close()
    reopened.close()


def test_refusals(softhsm: Token, tmp_path: Path) -> None:
    settings, _ = softhsm
    with pytest.raises(AuthenticationError, match="wrong PIN"):
        Pkcs11Provider(settings, Secret("0000-0000"), "ws")
    with pytest.raises(ConfigError, match="no PKCS#11 token"):
        Pkcs11Provider(TokenSettings(settings.module, "no-such-token"), softhsm[1], "ws")
    not_a_module = tmp_path / "libnothing.so"
    not_a_module.write_bytes(b"not a library")
    with pytest.raises(ConfigError, match="cannot load"):
        Pkcs11Provider(TokenSettings(str(not_a_module), settings.token), softhsm[1], "ws")


def test_the_token_signs_with_a_key_it_never_releases(softhsm: Token) -> None:
    from pkcs11 import Attribute, ObjectClass

    provider = _provider(softhsm)
    assert provider.signing_key() is None
    signer = provider.create_signing_key()
    signature = signer.sign(b"checkpoint body")
    assert signer.public_key.algorithm == "ed25519"
    assert signer.public_key.verify(signature, b"checkpoint body")
    assert not signer.public_key.verify(signature, b"another body")
    following = provider.create_signing_key()  # a rotation's next key, labelled apart
    assert following.public_key != signer.public_key
    assert [k.label for k in provider.signing_keys()] == [signer.label, f"{signer.label}:2"]
    assert provider.signing_key().public_key == signer.public_key  # type: ignore[union-attr]
    (private,) = provider._session.get_objects(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: provider._signing_label}
    )
    assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
    assert "in the PKCS#11 token" in repr(signer)
    provider.discard()  # a failed init removes the signing key with the KEKs
    again = Pkcs11Provider(softhsm[0], softhsm[1], provider._label.split(":")[1])
    assert again.signing_key() is None and again.kek_ids() == []
    again.close()


def test_a_workspace_signs_its_checkpoints_in_the_token(softhsm: Token, tmp_path: Path) -> None:
    """The keystore holds no signing key: the passphrase alone cannot sign checkpoints."""
    from sealml.workspace.core import SIGNING_SECRET

    ws = token_workspace(tmp_path / "ws", softhsm)
    with pytest.raises(NotFoundError, match="no secret named"):
        ws.keystore.load_secret(SIGNING_SECRET)
    ws.put(io.BytesIO(b"a,b\n1,2\n"), "dataset", "rows.csv")
    report = ws.audit_verify()
    assert report.ok and report.checkpoints >= 1
    assert ws.note_signer.verifier.encode() == ws.config.ledger.verifier_key
    ws.close()


def test_a_token_workspace_with_its_signing_key_in_the_keystore_still_opens(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workspaces made before the signing key moved into tokens keep it in the keystore,
    which is read first; their KEKs are in the token all the same."""
    settings, pin = softhsm
    root = tmp_path / "ws"
    made = Workspace.init(root, passphrase=Secret(PASSPHRASE),
                          admin_password=Secret(ADMIN_PASSWORD), kdf=FAST_PARAMS)  # fmt: skip
    verifier = made.config.ledger.verifier_key
    provider = Pkcs11Provider.initialise(settings, pin, made.config.workspace.id)
    made.close()
    config = root / "sealml.toml"
    config.write_text(config.read_text().replace(
        "[keys]\n",
        f'[keys]\nprovider = "pkcs11"\nhsm_module = "{settings.module}"\n'
        f'hsm_token = "{settings.token}"\n',
    ).replace('provider = "local"\n', ""))  # fmt: skip
    monkeypatch.setenv("SEALML_HSM_PIN", pin.reveal().decode())
    with Workspace.open(root, passphrase=Secret(PASSPHRASE)) as ws:
        ws.login("admin", Secret(ADMIN_PASSWORD))
        assert provider.signing_key() is None  # the token holds KEKs only
        assert ws.note_signer.verifier.encode() == verifier
        info = ws.put(io.BytesIO(b"a,b\n1,2\n"), "dataset", "rows.csv")
        assert ws.read_bytes(info.id) == b"a,b\n1,2\n"
        assert ws.audit_verify().ok
        assert ws.keys.current_kek_id() == "hsm:1"  # the new data key is the token's
    provider.close()


def test_a_workspace_keeps_its_keks_in_the_token(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = softhsm[1]
    root = tmp_path / "ws"
    ws = token_workspace(root, softhsm)
    info = ws.put(io.BytesIO(b"age,income\n41,52000\n"), "dataset", "rows")
    assert ws.rotate_keys()["kek"] == "hsm:2"
    ws.close()
    keystore = json.loads((root / ".sealml" / "keystore.json").read_text())
    assert all(not k["id"].startswith("hsm:") for k in keystore["keks"])
    monkeypatch.setenv("SEALML_HSM_PIN", pin.reveal().decode())
    again = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    again.login("admin", Secret(ADMIN_PASSWORD))
    again.get(info.id, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == b"age,income\n41,52000\n"
    assert again.verify_store().ok
    again.close()
    monkeypatch.setenv("SEALML_HSM_PIN", "0000-0000")
    wrong = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    wrong.login("admin", Secret(ADMIN_PASSWORD))
    with pytest.raises(AuthenticationError, match="wrong PIN"):
        wrong.get(info.id, tmp_path / "never.csv")
    wrong.close()


def _keks_on(softhsm: Token) -> int:
    from pkcs11 import Attribute, ObjectClass

    probe = Pkcs11Provider(*softhsm, "probe")
    count = len(list(probe._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})))
    probe.close()
    return count


def test_a_failed_init_leaves_no_key_on_the_token(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sealml.workspace.core as core

    def broken(session: Any) -> None:
        raise RuntimeError("disk full")

    before = _keks_on(softhsm)
    monkeypatch.setattr(core.Ledger, "initialise", staticmethod(broken))
    with pytest.raises(RuntimeError):
        token_workspace(tmp_path / "ws", softhsm)
    assert not (tmp_path / "ws" / "sealml.toml").exists()
    assert _keks_on(softhsm) == before


def test_cli_init_with_a_token(softhsm: Token, cli: Any, ws_path: Path) -> None:
    settings, pin = softhsm
    half = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module, env=admin_env())
    assert half.code == 2 and "together" in half.stderr
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    made = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module,
               "--hsm-token", settings.token, env=env)  # fmt: skip
    assert made.code == 0, made.stderr
    data = ws_path.parent / "rows.csv"
    data.write_text("a,b\n1,2\n")
    assert cli("put", str(data), "--kind", "dataset", env=env).code == 0
    wrong = cli("get", "rows.csv", "-o", str(ws_path.parent / "out.csv"),
                env=admin_env(SEALML_HSM_PIN="0000-0000"))  # fmt: skip
    assert wrong.code == 2 and wrong.stderr.startswith("error: wrong PIN")
    assert not (ws_path.parent / "out.csv").exists()


def test_a_pipeline_seals_its_outputs_under_the_tokens_keks(
    softhsm: Token, cli: Any, ws_path: Path, small_pipeline: Path
) -> None:
    """The sealing process opens the token itself, with the PIN its parent used (it may
    have been started before that PIN was in any environment)."""
    from sealml.workspace.runs import start_sealing_process

    assert start_sealing_process().wait_ready(120)  # started with no PIN in its environment
    settings, pin = softhsm
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    made = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module,
               "--hsm-token", settings.token, env=env)  # fmt: skip
    assert made.code == 0, made.stderr
    run = cli("run", str(small_pipeline), "--json", env=env)
    assert run.code == 0, run.stderr
    assert cli("verify", "--all", env=env).code == 0
    import sqlite3

    with sqlite3.connect(ws_path / ".sealml" / "sealml.db") as connection:
        keks = {kek for (kek,) in connection.execute("SELECT DISTINCT kek_id FROM data_keys")}
    assert keks == {"hsm:1"}


def test_a_backup_restores_against_the_same_token(
    softhsm: Token, cli: Any, ws_path: Path, tmp_path: Path
) -> None:
    """The backup holds no KEK and no signing key (they never leave the token): the
    restored workspace reads its artifacts through the same token, and restoring needs the
    PIN (the token signs the restore's ledger event), checked before anything is placed."""
    settings, pin = softhsm
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    made = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module,
               "--hsm-token", settings.token, env=env)  # fmt: skip
    assert made.code == 0, made.stderr
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    assert cli("put", str(data), "--kind", "dataset", env=env).code == 0
    archive = tmp_path / "ws.backup"
    assert cli("backup", str(archive), env=env).code == 0, "backup"
    restored = tmp_path / "restored"
    without_pin = cli("restore", str(archive), str(restored), env=admin_env())
    assert without_pin.code == 2 and "HSM PIN is needed" in without_pin.stderr
    assert not restored.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "ws", "ws.backup"]
    result = cli("restore", str(archive), str(restored), env=env)
    assert result.code == 0, result.stderr
    there = admin_env(SEALML_WORKSPACE=str(restored), SEALML_HSM_PIN=pin.reveal().decode())
    assert cli("get", "rows.csv", "-o", str(tmp_path / "out.csv"), env=there).code == 0
    assert (tmp_path / "out.csv").read_text() == "a,b\n1,2\n"


def test_no_pin_or_its_hash_in_reprs(softhsm: Token) -> None:
    import hashlib

    from sealml.keys import pkcs11 as module

    provider = _provider(softhsm)
    pin = softhsm[1].reveal()
    shown = repr(provider) + repr(module._OPEN) + repr(softhsm[0])
    assert pin.decode() not in shown and hashlib.sha256(pin).hexdigest() not in shown
    assert repr(hashlib.sha256(pin).digest()) not in shown
    provider.close()


def test_a_pin_file_must_be_private(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = softhsm[1]
    root = tmp_path / "ws"
    ws = token_workspace(root, softhsm)
    ws.close()
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(pin.reveal() + b"\n")
    config = root / "sealml.toml"
    config.write_text(
        config.read_text().replace("[keys]\n", f'[keys]\nhsm_pin_file = "{pin_file}"\n')
    )
    monkeypatch.delenv("SEALML_HSM_PIN", raising=False)
    pin_file.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        _ = Workspace.open(root, passphrase=Secret(PASSPHRASE)).keys
    pin_file.chmod(0o600)
    opened = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    assert opened.keys.current_kek_id() == "hsm:1"
    opened.close()


def test_siblings_of_a_token_workspace_unwrap_side_by_side(softhsm: Token, tmp_path: Path) -> None:
    """The dashboard's pool: other objects for the same workspace, each with its own token
    session, used from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    ws = token_workspace(tmp_path / "ws", softhsm)
    infos = [ws.put(io.BytesIO(f"row {i}\n".encode()), "dataset", f"rows-{i}") for i in range(6)]
    siblings = [ws.sibling() for _ in range(3)]
    try:
        for sibling in siblings:
            sibling.login("admin", Secret(ADMIN_PASSWORD))

        def read(index: int) -> bytes:
            return siblings[index % 3].read_bytes(infos[index % 6].id)

        with ThreadPoolExecutor(3) as pool:
            found = list(pool.map(read, range(18)))
        assert found == [f"row {i % 6}\n".encode() for i in range(18)]
        assert siblings[0].audit_verify().ok
    finally:
        for sibling in siblings:
            sibling.close()
        ws.close()


def test_a_process_open_across_a_token_rotation_seals_under_the_new_kek(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token case of a rotation elsewhere: the KEK object the open process knew is
    destroyed, so it must find the new one before it wraps, and to read re-wrapped keys."""
    root = tmp_path / "ws"
    ws = token_workspace(root, softhsm)
    before = ws.put(io.BytesIO(b"before"), "other", "before")
    monkeypatch.setenv("SEALML_HSM_PIN", softhsm[1].reveal().decode())
    admin = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    admin.login("admin", Secret(ADMIN_PASSWORD))
    assert admin.rotate_keys() == {"kek": "hsm:2", "rewrapped": 1, "destroyed": ["hsm:1"]}
    admin.close()
    after = ws.put(io.BytesIO(b"after"), "other", "after")
    ws.get(before.id, tmp_path / "before")
    ws.close()
    fresh = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    fresh.login("admin", Secret(ADMIN_PASSWORD))
    fresh.get(after.id, tmp_path / "after")
    assert (tmp_path / "after").read_bytes() == b"after"
    assert (tmp_path / "before").read_bytes() == b"before"
    fresh.close()
