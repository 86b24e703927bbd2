"""OpenSSF model signatures: interoperable both ways with the real ``model_signing`` CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sealml.crypto.signing import SigningKey
from sealml.errors import IntegrityError, UsageError
from sealml.models.manifest import hash_model
from sealml.models.openssf import (
    load_private_key,
    load_public_key,
    parse_bundle,
    sign_model,
    verify_model,
)

pytest.importorskip("model_signing", reason="model-signing is in the test extra")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = SigningKey.generate()
    private, public = tmp_path / "ec.key", tmp_path / "ec.pub"
    private.write_bytes(key.pkcs8_pem())
    public.write_text(key.public_key.pem())
    return private, public


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "tokenizer.bin").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "deeper" / "weights.safetensors").write_bytes(b"\x08" + b"\0" * 4095)
    (root / ".hidden").write_text("dotfiles are signed too")
    (root / "empty").write_bytes(b"")
    (root / "a-b").write_text("ordering")
    (root / "a.txt").write_text("ordering")
    return root


def reference(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def reference_verify(
    model: Path, signature: Path, public: Path
) -> subprocess.CompletedProcess[str]:
    return reference("verify", "key", model, "--signature", signature, "--public_key", public)


def test_what_sealml_signs_the_reference_verifies(model: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    signature = model / "model.sig"
    sign_model(model, load_private_key(private), signature)
    result = reference_verify(model, signature, public)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Verification succeeded" in result.stdout


def test_what_the_reference_signs_sealml_verifies(model: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    signature = model / "model.sig"
    result = reference("sign", "key", model, "--private_key", private, "--signature", signature)
    assert result.returncode == 0, result.stderr
    manifest = verify_model(model, signature, load_public_key(public))
    assert manifest.root_digest == hash_model(model, signature=signature).root_digest
    claimed = json.loads(
        base64.b64decode(json.loads(signature.read_text())["dsseEnvelope"]["payload"])
    )
    assert claimed["subject"][0]["digest"]["sha256"] == manifest.root_digest


def test_single_file_models_interoperate(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    weights = model / "sub" / "tokenizer.bin"
    ours, theirs = tmp_path / "ours.sig", tmp_path / "theirs.sig"
    sign_model(weights, load_private_key(private), ours)
    assert reference_verify(weights, ours, public).returncode == 0
    assert (
        reference(
            "sign", "key", weights, "--private_key", private, "--signature", theirs
        ).returncode
        == 0
    )
    verify_model(weights, theirs, load_public_key(public))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("change", ["flip", "add", "remove"])
@pytest.mark.parametrize("signer", ["sealml", "reference"])
def test_any_change_fails_both_verifiers(
    model: Path, keys: tuple[Path, Path], change: str, signer: str
) -> None:
    private, public = keys
    signature = model / "model.sig"
    if signer == "sealml":
        sign_model(model, load_private_key(private), signature)
    else:
        assert (
            reference(
                "sign", "key", model, "--private_key", private, "--signature", signature
            ).returncode
            == 0
        )
    if change == "flip":
        _flip_byte(model / "sub" / "tokenizer.bin")
    elif change == "add":
        (model / "sub" / "extra.py").write_text("import os")
    else:
        (model / "a.txt").unlink()
    with pytest.raises(
        IntegrityError, match={"flip": "changed", "add": "added", "remove": "missing"}[change]
    ):
        verify_model(model, signature, load_public_key(public))
    assert reference_verify(model, signature, public).returncode != 0


def test_wrong_key_edited_payload_and_extra_fields_are_refused(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, _ = keys
    signature = model / "model.sig"
    sign_model(model, load_private_key(private), signature)
    other = tmp_path / "other.pub"
    other.write_text(SigningKey.generate().public_key.pem())
    with pytest.raises(IntegrityError, match="different key"):
        verify_model(model, signature, load_public_key(other))

    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][:-1]
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    edited = tmp_path / "edited.sig"
    edited.write_text(json.dumps(bundle))
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_model(model, edited, load_public_key(keys[1]))

    bundle = json.loads(signature.read_text())
    bundle["extra"] = 1
    with pytest.raises(IntegrityError, match="unexpected fields"):
        parse_bundle(json.dumps(bundle).encode())
    for broken in (b"", b"{", b"[]", signature.read_bytes()[:-20], b"[" * 100_000):
        with pytest.raises(IntegrityError):
            parse_bundle(broken)


def test_symlinks_and_non_ec_keys_are_refused(model: Path, tmp_path: Path) -> None:
    (model / "link").symlink_to("/etc/passwd")
    with pytest.raises(UsageError, match="symlink"):
        hash_model(model)
    (model / "link").unlink()
    with pytest.raises(UsageError, match="P-256"):
        sign_model(model, SigningKey.generate("ed25519"), tmp_path / "x.sig")
