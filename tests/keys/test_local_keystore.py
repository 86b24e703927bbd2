"""The passphrase-protected keystore."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sealml.crypto.kdf import FAST_PARAMS
from sealml.crypto.secret import Secret
from sealml.errors import AuthenticationError, ConfigError, IntegrityError, UsageError
from sealml.keys.local import LocalKeystore
from sealml.keys.provider import dek_context

PASS = Secret("keystore passphrase")


@pytest.fixture
def keystore(tmp_path: Path) -> LocalKeystore:
    return LocalKeystore.create(tmp_path / "keystore.json", "ws1", PASS, FAST_PARAMS)


def test_created_0600_and_refuses_overwrite(keystore: LocalKeystore, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(UsageError):
        LocalKeystore.create(path, "ws1", PASS, FAST_PARAMS)


def test_wrap_unwrap_and_context_binding(keystore: LocalKeystore, tmp_path: Path) -> None:
    dek = os.urandom(32)
    wrapped = keystore.wrap(dek, dek_context("a"))
    reopened = LocalKeystore.open(tmp_path / "keystore.json", PASS)
    assert reopened.unwrap(wrapped, dek_context("a")) == dek
    with pytest.raises(IntegrityError):
        reopened.unwrap(wrapped, dek_context("b"))


def test_wrong_passphrase(keystore: LocalKeystore, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match="wrong keystore passphrase"):
        LocalKeystore.open(tmp_path / "keystore.json", Secret("nope"))


def test_rotate_and_destroy(keystore: LocalKeystore, tmp_path: Path) -> None:
    dek = os.urandom(32)
    old = keystore.wrap(dek, b"ctx")
    assert keystore.rotate() == "local:2"
    assert keystore.wrap(dek, b"ctx").kek_id == "local:2"
    with pytest.raises(UsageError):
        keystore.destroy(["local:2"])
    keystore.destroy(["local:1"])
    reopened = LocalKeystore.open(tmp_path / "keystore.json", PASS)
    assert reopened.kek_ids() == ["local:2"]
    with pytest.raises(IntegrityError, match="no longer held"):
        reopened.unwrap(old, b"ctx")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["keks"][0].update(box=d["keks"][0]["box"][:-4] + "AAAA"),
        lambda d: d.update(format="other"),
        lambda d: d.update(keks=[]),
        lambda d: d["kdf"].update(memory_kib=1 << 40),
    ],
    ids=["kek-box", "format", "no-keks", "absurd-kdf"],
)
def test_tampered_keystore_is_refused(
    keystore: LocalKeystore, tmp_path: Path, edit: object
) -> None:
    path = tmp_path / "keystore.json"
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises((IntegrityError, ConfigError)):
        LocalKeystore.open(path, PASS)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]"])
def test_malformed_keystore_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        LocalKeystore.open(path, PASS)


def test_passphrase_change_keeps_keys_and_secrets(keystore: LocalKeystore, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    dek = os.urandom(32)
    wrapped = keystore.wrap(dek, b"ctx")
    keystore.store_secret("signing", b"secret bytes")
    with pytest.raises(AuthenticationError):
        keystore.change_passphrase(Secret("wrong"), Secret("new passphrase"), FAST_PARAMS)
    with pytest.raises(UsageError):
        keystore.change_passphrase(PASS, Secret(""), FAST_PARAMS)
    stale = LocalKeystore.open(path, PASS)  # another process, opened before the change
    keystore.change_passphrase(PASS, Secret("new passphrase"), FAST_PARAMS)
    with pytest.raises(AuthenticationError):
        LocalKeystore.open(path, PASS)
    with pytest.raises(AuthenticationError):
        stale.rotate()  # it cannot write under the old passphrase any more
    reopened = LocalKeystore.open(path, Secret("new passphrase"))
    assert reopened.unwrap(wrapped, b"ctx") == dek
    assert reopened.load_secret("signing") == b"secret bytes"
    assert keystore.load_secret("signing") == b"secret bytes"
    assert reopened.kek_ids() == ["local:1"]
