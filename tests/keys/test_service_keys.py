"""Service principals whose ECDSA P-256 key is generated in the PKCS#11 token: it signs
there (artifacts, provenance, OpenSSF model signatures), never exists in a file, and is
rotated there; a session cannot carry it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.errors import AuthenticationError, UsageError
from sealml.keys.pkcs11 import TokenEcdsaKey, TokenSettings

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, admin_env, reference_verify
from .conftest import token_workspace

Token = tuple[TokenSettings, Secret]


def _as(root: Path, softhsm: Token, name: str, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("SEALML_HSM_PIN", softhsm[1].reveal().decode())
    ws = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    ws.login_with_token_key(name)
    return ws


def test_a_service_signs_with_a_key_that_stays_in_the_token(
    softhsm: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkcs11 import Attribute

    root = tmp_path / "ws"
    admin = token_workspace(root, softhsm)
    principal, key = admin.add_user("ci", ["ml-engineer"], service=True, key_in_token=True)
    assert key is None  # nothing to write to a file
    [held] = admin.token.principal_keys(principal.id)
    assert held.public_key == principal.public_key
    assert held._private[Attribute.SENSITIVE] and not held._private[Attribute.EXTRACTABLE]
    with pytest.raises(TypeError):
        __import__("pickle").dumps(held)
    admin.close()

    ci = _as(root, softhsm, "ci", monkeypatch)
    assert isinstance(ci.require_actor().signing_key, TokenEcdsaKey)
    info = ci.put(io.BytesIO(b"features,label\n1,0\n"), "other", "signed-in-the-token")
    assert ci.verify(info.id).creator == "ci"
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01" * 1000)
    ci.sign_path(model, tmp_path / "model.sig")
    manifest, signer = ci.verify_path(model, tmp_path / "model.sig")
    assert signer == "ci" and manifest.root_digest
    public = tmp_path / "ci.pub"
    public.write_text(principal.public_key.pem())
    reference = reference_verify(model, tmp_path / "model.sig", public)
    assert reference.returncode == 0, reference.stderr + reference.stdout
    with pytest.raises(UsageError, match="session"):
        ci.start_session()
    ci.close()

    admin = Workspace.open(root, passphrase=Secret(PASSPHRASE))
    admin.login("admin", Secret(ADMIN_PASSWORD))
    before, after, written = admin.rotate_signing_key("ci")
    assert written is None and after.public_key != before.public_key
    [successor] = admin.token.principal_keys(principal.id)  # the old pair is destroyed
    assert successor.public_key == after.public_key
    assert admin.verify(info.id).creator == "ci"  # signed by the retired key: still valid
    admin.close()
    again = _as(root, softhsm, "ci", monkeypatch)
    assert again.require_actor().signing_key.public_key == after.public_key
    again.close()


def test_refusals(softhsm: Token, tmp_path: Path, workspace: Workspace) -> None:
    with pytest.raises(UsageError, match="keys migrate"):
        workspace.add_user("ci", ["service"], service=True, key_in_token=True)
    assert [p.name for p in workspace.users()] == ["admin"]
    root = tmp_path / "token-ws"
    admin = token_workspace(root, softhsm)
    with pytest.raises(UsageError, match="only a service"):
        admin.add_user("dana", ["data-scientist"], password=Secret("dana-password-1"),
                       key_in_token=True)  # fmt: skip
    admin.add_user("svc", ["service"], service=True, key_in_token=True)
    with pytest.raises(AuthenticationError, match="is a person"):
        admin.login_with_token_key("admin")
    with pytest.raises(UsageError, match="already exists"):
        admin.add_user("svc", ["service"], service=True, key_in_token=True)
    assert len(admin.token.principal_keys(admin.public_key("svc").id)) == 1
    admin.close()


def test_cli(softhsm: Token, cli: Any, ws_path: Path) -> None:
    settings, pin = softhsm
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    made = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module,
               "--hsm-token", settings.token, env=env)  # fmt: skip
    assert made.code == 0, made.stderr
    both = cli("user", "add", "ci", "--role", "service", "--key-in-token", "--key-file", "k.pem",
               env=env)  # fmt: skip
    assert both.code == 2 and "not both" in both.stderr
    added = cli("user", "add", "ci", "--role", "service", "--key-in-token", "--json", env=env)
    assert added.code == 0, added.stderr
    assert json.loads(added.stdout)["key_in_token"] is True
    as_ci = {**env, "SEALML_USER": "ci", "SEALML_KEY_IN_TOKEN": "1"}
    as_ci.pop("SEALML_PASSWORD", None)
    data = ws_path.parent / "rows.csv"
    data.write_text("a,b\n1,2\n")
    sealed = cli("put", str(data), "--kind", "dataset", env=as_ci)
    assert sealed.code == 0, sealed.stderr
    who = cli("whoami", env=as_ci)
    assert "ci" in who.stdout and "via token" in who.stdout
    rotated = cli("user", "rotate-key", "ci", "--json", env=env)
    assert rotated.code == 0, rotated.stderr
    assert cli("verify", "rows.csv", env=env).code == 0
    assert cli("put", str(data), "--kind", "dataset", "--name", "again", env=as_ci).code == 0


def test_the_sealing_process_signs_with_the_services_key_in_the_token(
    softhsm: Token, cli: Any, ws_path: Path, small_pipeline: Path
) -> None:
    """A local run seals in a separate process, which is handed no private key: it finds
    the service's key in the token itself."""
    from sealml.workspace.runs import start_sealing_process

    assert start_sealing_process().wait_ready(120)
    settings, pin = softhsm
    env = admin_env(SEALML_HSM_PIN=pin.reveal().decode())
    made = cli("init", "--insecure-fast-kdf", "--hsm-module", settings.module,
               "--hsm-token", settings.token, env=env)  # fmt: skip
    assert made.code == 0, made.stderr
    assert cli("user", "add", "runner", "--role", "data-scientist", "--role", "data-steward",
               "--key-in-token", env=env).code == 0  # fmt: skip
    as_runner = {k: v for k, v in env.items() if k != "SEALML_PASSWORD"}
    as_runner |= {"SEALML_USER": "runner", "SEALML_KEY_IN_TOKEN": "1"}
    run = cli("run", str(small_pipeline), "--json", env=as_runner)
    assert run.code == 0, run.stderr
    assert cli("verify", "--all", env=env).code == 0
    listed = json.loads(cli("ls", "--json", env=env).stdout)
    assert {entry["creator"] for entry in listed} == {"runner"}
