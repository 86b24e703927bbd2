"""`sealml scan` and `sealml model ...` end to end through the real entry point."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sealml.access import totp
from sealml.models.formats import dump_skops

from ..conftest import admin_env, reference_verify
from ..models.corpus import benign, malicious
from .test_cli import one_line_error

ERIN = "erin-password-1"


@pytest.fixture
def ready(cli: Any) -> Any:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    return cli


def erin_env(**extra: str) -> dict[str, str]:
    return {**admin_env(), "SEALML_USER": "erin", "SEALML_PASSWORD": ERIN, **extra}


def skops_model(tmp_path: Path, depth: int = 2) -> Path:
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(max_depth=depth).fit([[0], [1], [2]], [0, 1, 1])
    path = tmp_path / f"tree{depth}.skops"
    path.write_bytes(dump_skops(model))
    return path


def test_scan_verdicts_and_exit_codes(cli: Any, tmp_path: Path) -> None:
    name, payload = next(iter(malicious().items()))
    bad = tmp_path / name
    bad.write_bytes(payload)
    good_name, good_payload = next(iter(benign().items()))
    good = tmp_path / "clean" / good_name
    good.parent.mkdir()
    good.write_bytes(good_payload)
    unsafe = cli("scan", str(bad), "--json")
    assert unsafe.code == 1
    assert json.loads(unsafe.stdout)["verdict"] == "unsafe"
    assert cli("scan", str(good.parent)).code == 0
    assert "safe" in cli("scan", str(good)).stdout
    (good.parent / "README.md").write_text("# A forest\n\nTrained on census data.\n")
    folder = cli("scan", str(good.parent))
    assert folder.code == 0 and "1 of no model format" in folder.stdout
    one_line_error(cli("scan", str(tmp_path / "missing.pkl")), 2, "does not exist")
    one_line_error(cli("scan"), 2, "give a PATH")


def test_scan_output_carries_no_terminal_escape_sequences(cli: Any, tmp_path: Path) -> None:
    """An archive member's name is the attacker's: an escape sequence in it must not reach
    the terminal (it could clear the verdict's line and draw another)."""
    archive = tmp_path / "model.zip"
    name = "weights\x1b[2K\x1b[1Asafe  model.zip\x07.pkl"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(name, pickle.dumps(os.system, protocol=2))
    scanned = cli("scan", str(archive))
    assert scanned.code == 1 and scanned.stdout.startswith("unsafe")
    assert "\x1b" not in scanned.stdout and "\x07" not in scanned.stdout
    assert "weights\ufffd[2K\ufffd[1Asafe" in scanned.stdout
    as_json = json.loads(cli("scan", str(archive), "--json").stdout)
    assert as_json["findings"][0]["location"].startswith(f"model.zip!{name}@")  # exact in JSON


def test_tables_and_styled_lines_are_printed_without_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rich.table import Table

    from sealml.cli.common import out, styled

    table = Table("name")
    table.add_row("evil\x1b[2K\rname")
    out.print(styled(("bold\x1b]0;title\x07", "bold"), " plain\x9b1A"))
    out.print(table)
    printed = capsys.readouterr().out
    assert not any(ch in printed for ch in "\x1b\x07\r\x9b")
    # (rich itself drops the bell, backspace and carriage return from a Text)
    assert "bold\ufffd]0;title plain\ufffd1A" in printed and "evil\ufffd[2K\ufffdname" in printed


def test_scan_artifact_records_a_report(ready: Any, tmp_path: Path) -> None:
    model = skops_model(tmp_path)
    put = ready("put", str(model), "--kind", "model", "--json", env=admin_env())
    artifact = json.loads(put.stdout)["id"]
    scanned = ready("scan", "--artifact", artifact, env=admin_env())
    assert scanned.code == 0 and "recorded scan report" in scanned.stdout
    reports = json.loads(ready("ls", "--kind", "report", "--json", env=admin_env()).stdout)
    assert [r["name"] for r in reports] == [f"{model.name}.scan.json"]


def test_sign_and_verify_with_principal_keys(ready: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\x00" * 64)
    (folder / "config.json").write_text("{}")
    assert ready("model", "sign", str(folder), env=admin_env()).code == 0
    signature = tmp_path / "model.sig"
    assert signature.is_file()
    verified = ready("model", "verify", str(folder), env=admin_env())
    assert verified.code == 0 and "signed by admin" in verified.stdout
    as_json = json.loads(ready("model", "verify", str(folder), "--json", env=admin_env()).stdout)
    assert as_json == {"verified": True, "files": 2, "signer": "admin"}
    (folder / "config.json").write_text('{"evil": 1}')
    one_line_error(ready("model", "verify", str(folder), env=admin_env()), 1, "changed")
    signature.write_text("{not json")
    one_line_error(ready("model", "verify", str(folder), env=admin_env()), 1, "not a valid")
    one_line_error(ready("model", "verify", str(folder), "--signature", str(tmp_path / "x.sig")), 2)


def test_exported_public_key_verifies_with_the_reference_tool(ready: Any, tmp_path: Path) -> None:
    """`keys export` gives outsiders what `model_signing verify key` needs."""
    pytest.importorskip("model_signing", reason="model-signing is in the test extra")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\x00" * 64)
    assert ready("model", "sign", str(folder), env=admin_env()).code == 0
    public = tmp_path / "admin.pub"
    exported = ready("keys", "export", "-o", str(public), env=admin_env())
    assert exported.code == 0, exported.stderr
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    shown = ready("keys", "export", env=admin_env())
    assert shown.stdout == public.read_text()
    result = reference_verify(folder, tmp_path / "model.sig", public)
    assert result.returncode == 0, result.stderr + result.stdout
    one_line_error(ready("keys", "export", "-o", str(public), env=admin_env()), 2, "exists")
    one_line_error(ready("keys", "export", "--user", "nobody", env=admin_env()), 2, "nobody")
    assert ready("user", "add", "erin", "--role", "ml-engineer",
                 env={**admin_env(), "SEALML_NEW_PASSWORD": ERIN}).code == 0  # fmt: skip
    own = ready("keys", "export", env=erin_env())
    assert own.code == 0 and own.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert own.stdout != public.read_text()
    # another principal's key needs user:read, which an ML engineer lacks
    one_line_error(ready("keys", "export", "--user", "admin", env=erin_env()), 2, "user:read")


def test_import_refuses_unsafe_files(ready: Any, tmp_path: Path) -> None:
    _, payload = next(iter(malicious().items()))
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(payload)
    one_line_error(
        ready("model", "import", str(bad), "--source", "https://x.test/m", env=admin_env()),
        1,
        "not imported",
    )
    good = skops_model(tmp_path)
    done = ready("model", "import", str(good), "--source", "https://x.test/t", "--json",
                 env=admin_env())  # fmt: skip
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["source"] == "https://x.test/t"
    assert ready("verify", json.loads(done.stdout)["artifact"], env=admin_env()).code == 0


def test_import_refuses_skops_naming_code_and_files_that_are_not_their_format(
    ready: Any, tmp_path: Path
) -> None:
    import os

    from sklearn.preprocessing import FunctionTransformer

    evil = tmp_path / "evil.skops"
    evil.write_bytes(dump_skops(FunctionTransformer(func=os.system)))
    one_line_error(
        ready("model", "import", str(evil), "--source", "https://x.test/e", env=admin_env()),
        1,
        "system",
    )
    for name in ("noise.skops", "noise.safetensors"):
        noise = tmp_path / name
        noise.write_bytes(bytes(range(256)) * 8)  # used to be imported as "safe"
        one_line_error(
            ready("model", "import", str(noise), "--source", "https://x.test/n", env=admin_env()),
            2,
            "not a",
        )
    listed = ready("ls", "--json", env=admin_env())
    assert listed.code == 0 and "evil.skops" not in listed.stdout and "noise" not in listed.stdout


def test_register_approve_promote_rollback(ready: Any, tmp_path: Path) -> None:
    added = ready(
        "user", "add", "erin", "--role", "ml-engineer",
        env={**admin_env(), "SEALML_NEW_PASSWORD": ERIN},
    )  # fmt: skip
    assert added.code == 0
    versions = []
    for depth in (2, 3):
        put = ready("put", str(skops_model(tmp_path, depth)), "--kind", "model", "--json",
                    env=admin_env())  # fmt: skip
        artifact = json.loads(put.stdout)["id"]
        registered = ready("model", "register", artifact, "--name", "credit", "--json",
                           env=admin_env())  # fmt: skip
        assert registered.code == 0, registered.stderr
        versions.append(json.loads(registered.stdout)["version"])
    assert versions == [1, 2]
    enrolled = ready("user", "totp-enroll", "--json", env=erin_env())
    secret = json.loads(enrolled.stdout)["secret"]
    assert json.loads(enrolled.stdout)["uri"].startswith("otpauth://totp/")
    code = totp.current_code(secret)
    one_line_error(
        ready(
            "model",
            "approve",
            "credit",
            "1",
            "--code",
            "000000" if code != "000000" else "1",
            env=erin_env(),
        ),
        2,
        "one-time code",
    )
    approved = ready("model", "approve", "credit", "1", "--code", code, "--json", env=erin_env())
    assert approved.code == 0 and json.loads(approved.stdout)["version"] == 1
    one_line_error(
        ready("model", "approve", "credit", "1", "--code", code, env=erin_env()), 2, "already used"
    )
    # The default production gate wants provenance and an evaluation: a bare upload fails.
    one_line_error(
        ready("model", "promote", "credit", "1", env=erin_env()), 2, "no verified provenance"
    )
    gate = ready("model", "gate", "credit", "1", env=erin_env())
    assert gate.code == 1 and "may not become production" in gate.stdout
    checks = json.loads(ready("gate", "credit@1", "--json", env=erin_env()).stdout)["checks"]
    failed = {c["check"] for c in checks if not c["passed"]}
    assert failed == {"provenance", "evaluation"}  # approval for v1 exists
    one_line_error(ready("gate", "credit", env=erin_env()), 2, "give the version")
    for version in ("1", "2"):
        moved = ready("model", "promote", "credit", version, "--alias", "staging", env=erin_env())
        assert moved.code == 0, moved.stderr
    shown = json.loads(ready("model", "show", "credit@staging", "--json", env=erin_env()).stdout)
    assert shown["version"] == 2 and shown["aliases"] == ["staging"]
    rolled = ready("model", "rollback", "credit", "--alias", "staging", "--json", env=erin_env())
    assert json.loads(rolled.stdout)["version"] == 1
    revoke = ready("model", "revoke", "credit", "1", "--reason", "leak", env=erin_env())
    assert revoke.code == 0
    listed = json.loads(ready("model", "ls", "credit", "--json", env=erin_env()).stdout)
    assert [(v["version"], v["status"]) for v in listed] == [(2, "active"), (1, "revoked")]
    history = json.loads(ready("model", "history", "credit", "--json", env=erin_env()).stdout)
    actions = [(e["action"], e["outcome"]) for e in history]
    assert ("model.rollback", "ok") in actions and ("model.promote", "denied") in actions
    assert "credit" in ready("model", "ls", env=erin_env()).stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model", "promote", "credit", "abc"], "valid integer"),
        (["model", "promote", "credit", "0"], "greater than or equal to 1"),
        (["model", "show", "../etc@1"], "model name"),
        (["model", "show", "credit@../x"], "alias"),
        (["model", "register", "nope", "--name", "credit"], "no artifact"),
        (["model", "register", "nope", "--name", "Bad Name"], "model name"),
        (["model", "rollback", "credit"], "no previous version"),
        (["model", "revoke", "credit", "1", "--reason", " "], "reason"),
        (["model", "approve", "credit", "1", "--alias", "staging", "--code", "1"], "no approval"),
    ],
)
def test_bad_input_is_one_line_exit_2(ready: Any, args: list[str], needle: str) -> None:
    one_line_error(ready(*args, env=admin_env()), 2, needle)
