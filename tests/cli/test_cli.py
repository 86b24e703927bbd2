"""The `sealml` command end to end: outputs, exit codes and one-line errors for bad input."""

from __future__ import annotations

import base64
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ADMIN_PASSWORD, DATA, PASSPHRASE, Result, admin_env

CSV = DATA / "german_credit.csv"


def one_line_error(result: Result, code: int = 2, needle: str = "") -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    for secret in (PASSPHRASE, ADMIN_PASSWORD):
        assert secret not in result.stderr + result.stdout


@pytest.fixture
def initialised(cli: Any) -> Any:
    result = cli("init", "--insecure-fast-kdf", "--json", env=admin_env())
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["admin"] == "admin" and "+" in data["verifier_key"]
    return cli


def put_csv(cli: Any) -> dict[str, Any]:
    result = cli("put", str(CSV), "--kind", "dataset", "--json", env=admin_env())
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_init_twice_is_refused(initialised: Any, ws_path: Path) -> None:
    before = (ws_path / "sealml.toml").read_bytes()
    one_line_error(initialised("init", env=admin_env()), 2, "already exists")
    assert (ws_path / "sealml.toml").read_bytes() == before


def test_init_without_secrets_in_a_script(cli: Any) -> None:
    one_line_error(cli("init"), 2, "SEALML_PASSPHRASE")


def test_put_get_ls_verify(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    assert info["kind"] == "dataset" and info["size"] == CSV.stat().st_size
    out = tmp_path / "copy.csv"
    result = initialised("get", info["id"][:10], "-o", str(out), env=admin_env())
    assert result.code == 0 and out.read_bytes() == CSV.read_bytes()
    listing = json.loads(initialised("ls", "--json", env=admin_env()).stdout)
    assert [item["id"] for item in listing] == [info["id"]]
    assert "german_credit.csv" in initialised("ls", env=admin_env()).stdout
    verified = initialised("verify", "german_credit.csv", "--json", env=admin_env())
    assert json.loads(verified.stdout)["status"] == "ok"
    everything = json.loads(initialised("verify", "--all", "--json", env=admin_env()).stdout)
    assert everything["ok"] and everything["artifacts"][0]["status"] == "ok"


def test_tampered_blob_fails_with_exit_1_and_no_output(
    initialised: Any, ws_path: Path, tmp_path: Path
) -> None:
    info = put_csv(initialised)
    blob = next(
        p
        for p in (ws_path / ".sealml" / "blobs").rglob("*")
        if p.is_file() and p.parent.name != "tmp"
    )
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x10
    blob.write_bytes(bytes(data))
    out = tmp_path / "copy.csv"
    one_line_error(
        initialised("get", info["id"], "-o", str(out), env=admin_env()), 1, "authentication"
    )
    assert not out.exists()
    assert initialised("verify", info["id"], env=admin_env()).code == 1
    result = initialised("verify", "--all", env=admin_env())
    assert result.code == 1 and "FAILED" in result.stdout


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SEALML_PASSPHRASE": "wrong"}, "passphrase"),
        ({"SEALML_PASSWORD": "wrong-password"}, "wrong password"),
        ({"SEALML_USER": "ghost"}, "wrong password"),
        ({"SEALML_USER": "", "SEALML_PASSWORD": ""}, "no principal"),
        ({"SEALML_KEY_FILE": "/nonexistent/key.pem"}, "does not exist"),
    ],
)
def test_bad_credentials(initialised: Any, env: dict[str, str], needle: str) -> None:
    result = initialised("put", str(CSV), "--kind", "dataset", env={**admin_env(), **env})
    one_line_error(result, 2, needle)
    assert json.loads(initialised("ls", "--json", env=admin_env()).stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["get", "nothing-here", "-o", "/tmp/never"], "no artifact"),
        (["put", "/nonexistent/file.csv", "--kind", "dataset"], "not a readable file"),
        (["put", str(CSV), "--kind", "weights"], "kind must be"),
        (["verify"], "--all"),
        (["audit", "show", "--since", "yesterday"], "--since"),
        (["audit", "prove", "99999999"], "no ledger event"),
        (["audit", "show", "--limit", str(10**30)], ""),
        (["user", "add", "Bad Name!", "--role", "auditor"], "principal name"),
        (["user", "add", "bob", "--role", "overlord"], "unknown role"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    initialised: Any, args: list[str], needle: str
) -> None:
    result = initialised(*args, env={**admin_env(), "SEALML_NEW_PASSWORD": "bob-password"})
    assert result.code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert needle.lower() in result.stderr.lower()


def test_get_to_missing_folder_or_existing_file(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    one_line_error(
        initialised("get", info["id"], "-o", str(tmp_path / "a" / "b" / "c"), env=admin_env()),
        2,
        "does not exist",
    )
    existing = tmp_path / "keep"
    existing.write_text("precious")
    one_line_error(
        initialised("get", info["id"], "-o", str(existing), env=admin_env()), 2, "exists"
    )
    assert existing.read_text() == "precious"
    assert initialised("get", info["id"], "-o", str(existing), "--force", env=admin_env()).code == 0


def test_names_are_never_paths(initialised: Any, tmp_path: Path, ws_path: Path) -> None:
    result = initialised(
        "put", str(CSV), "--kind", "dataset", "--name", "../../escape.csv", env=admin_env()
    )
    assert result.code == 0
    assert not (ws_path.parent / "escape.csv").exists() and not (tmp_path / "escape.csv").exists()
    out = tmp_path / "inside.csv"
    assert initialised("get", "../../escape.csv", "-o", str(out), env=admin_env()).code == 0
    assert out.read_bytes() == CSV.read_bytes()


@pytest.mark.parametrize(
    "config",
    [
        "not toml [",
        "[workspace]\nid = 1\n",
        "",
        "[seal]\nsegment_size = 1\n",
        "x = " + "[" * 5000 + "]" * 5000 + "\n",  # tomllib recursed until RecursionError
    ],
    ids=["syntax", "schema", "empty", "range", "deep"],
)
def test_malformed_config(initialised: Any, ws_path: Path, config: str) -> None:
    path = ws_path / "sealml.toml"
    original = path.read_text()
    if config.startswith("[seal]"):
        config = original + "\n" + config
    path.write_text(config)
    one_line_error(initialised("ls", env=admin_env()), 2, "sealml.toml")
    path.write_text(original)
    assert initialised("ls", env=admin_env()).code == 0


def test_no_workspace_here(cli: Any, tmp_path: Path) -> None:
    one_line_error(
        cli("ls", env={**admin_env(), "SEALML_WORKSPACE": str(tmp_path)}), 2, "no workspace"
    )


def test_users_roles_and_denials(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    add = initialised(
        "user",
        "add",
        "dana",
        "--role",
        "data-scientist",
        "--json",
        env={**admin_env(), "SEALML_NEW_PASSWORD": "dana-password"},
    )
    assert add.code == 0 and json.loads(add.stdout)["roles"] == ["data-scientist"]
    dana = {**admin_env(), "SEALML_USER": "dana", "SEALML_PASSWORD": "dana-password"}
    assert initialised("get", info["id"], "-o", str(tmp_path / "d.csv"), env=dana).code == 0
    one_line_error(initialised("keys", "rotate", env=dana), 2, "permission denied")
    one_line_error(
        initialised("user", "add", "eve", "--role", "admin", env=dana), 2, "permission denied"
    )
    users = json.loads(initialised("user", "ls", "--json", env=admin_env()).stdout)
    assert {u["name"] for u in users} == {"admin", "dana"}
    assert initialised("user", "disable", "dana", env=admin_env()).code == 0
    one_line_error(initialised("ls", env=dana), 2, "disabled")
    denied = json.loads(
        initialised("audit", "show", "--outcome", "denied", "--json", env=admin_env()).stdout
    )
    assert [(e["principal"], e["details"].get("permission")) for e in denied] == [
        ("dana", "keys:admin"),
        ("dana", "user:admin"),
        ("dana", None),
    ]


def test_password_roles_and_totp_reset(initialised: Any, isolated_env: Path) -> None:
    new_password = {"SEALML_NEW_PASSWORD": "dana-password"}
    assert (
        initialised(
            "user", "add", "dana", "--role", "auditor", env={**admin_env(), **new_password}
        ).code
        == 0
    )
    dana = {
        "SEALML_PASSPHRASE": PASSPHRASE,
        "SEALML_USER": "dana",
        "SEALML_PASSWORD": "dana-password",
    }
    assert initialised("login", env=dana).code == 0
    assert list((isolated_env / "sessions").rglob("dana.json"))
    one_line_error(
        initialised("user", "passwd", env={**dana, "SEALML_NEW_PASSWORD": "short"}), 2, "at least 8"
    )
    changed = initialised(
        "user", "passwd", env={**dana, "SEALML_NEW_PASSWORD": "dana-new-password"}
    )
    assert changed.code == 0, changed.stderr
    assert "dana-new-password" not in changed.stdout + changed.stderr
    assert not list((isolated_env / "sessions").rglob("dana.json"))  # the ticket is gone
    one_line_error(initialised("whoami", env=dana), 2, "wrong password")
    dana["SEALML_PASSWORD"] = "dana-new-password"
    assert json.loads(initialised("whoami", "--json", env=dana).stdout)["roles"] == ["auditor"]
    one_line_error(
        initialised("user", "roles", "dana", "--role", "admin", env=dana), 2, "permission denied"
    )
    roles = initialised(
        "user",
        "roles",
        "dana",
        "--role",
        "auditor",
        "--role",
        "data-steward",
        "--json",
        env=admin_env(),
    )
    assert json.loads(roles.stdout) == {
        "name": "dana",
        "before": ["auditor"],
        "after": ["auditor", "data-steward"],
    }
    one_line_error(
        initialised("user", "roles", "admin", "--role", "auditor", env=admin_env()),
        2,
        "away from you",
    )
    reset = initialised(
        "user", "reset-password", "dana", env={**admin_env(), "SEALML_NEW_PASSWORD": "dana-reset-1"}
    )
    assert reset.code == 0 and "dana-reset-1" not in reset.stdout + reset.stderr
    dana["SEALML_PASSWORD"] = "dana-reset-1"
    assert json.loads(initialised("whoami", "--json", env=dana).stdout)["name"] == "dana"
    assert json.loads(initialised("whoami", "--json", env=dana).stdout)["roles"] == []
    one_line_error(
        initialised("audit", "show", env=dana), 2, "change it first with `sealml user passwd`"
    )
    own = {**dana, "SEALML_NEW_PASSWORD": "dana-own-password"}
    assert initialised("user", "passwd", env=own).code == 0
    dana["SEALML_PASSWORD"] = "dana-own-password"
    assert initialised("audit", "show", env=dana).code == 0
    one_line_error(
        initialised(
            "user", "reset-password", "admin", env={**dana, "SEALML_NEW_PASSWORD": "x" * 9}
        ),
        2,
        "permission denied",
    )
    one_line_error(initialised("user", "totp-reset", "dana", env=admin_env()), 2, "no totp")
    one_line_error(initialised("user", "totp-reset", "admin", env=admin_env()), 2, "another")


def test_rotate_key(initialised: Any, tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "old.pem", tmp_path / "new.pem"
    add = ("user", "add", "scorer", "--role", "service", "--key-file", str(old_key))
    assert initialised(*add, env=admin_env()).code == 0
    rotate = ("user", "rotate-key", "scorer")
    one_line_error(initialised(*rotate, env=admin_env()), 2, "--key-file")
    one_line_error(initialised(*rotate, "--key-file", str(old_key), env=admin_env()), 2, "refusing")
    result = initialised(*rotate, "--key-file", str(new_key), "--json", env=admin_env())
    assert result.code == 0, result.stderr
    rotated = json.loads(result.stdout)
    assert rotated["retired"] != rotated["current"] and rotated["key_file"] == str(new_key)
    assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
    service = {"SEALML_PASSPHRASE": PASSPHRASE, "SEALML_USER": "scorer"}
    one_line_error(
        initialised("whoami", env={**service, "SEALML_KEY_FILE": str(old_key)}), 2, "belong"
    )
    whoami = initialised("whoami", "--json", env={**service, "SEALML_KEY_FILE": str(new_key)})
    assert json.loads(whoami.stdout)["key_fingerprint"] == rotated["current"]
    mine = json.loads(initialised("user", "rotate-key", "--json", env=admin_env()).stdout)
    assert mine["key_file"] is None
    one_line_error(
        initialised(*rotate, "--key-file", str(tmp_path / "x.pem"), "--compromised-since",
                    "2999-01-01", env=admin_env()),
        2,
        "future",
    )  # fmt: skip
    leaked = initialised(
        *rotate, "--key-file", str(tmp_path / "newer.pem"), "--compromised-since", "now",
        "--json", env=admin_env(),
    )  # fmt: skip
    assert leaked.code == 0, leaked.stderr
    assert json.loads(leaked.stdout)["compromised_since"].startswith("20")
    old_pem = tmp_path / "retired.pem"
    exported = initialised(
        "keys", "export", "--fingerprint", mine["retired"][:12], "-o", str(old_pem),
        env=admin_env(),
    )  # fmt: skip
    assert exported.code == 0 and "retired public key" in exported.stdout
    from sealml.crypto.signing import VerifyingKey

    assert VerifyingKey.from_pem(old_pem.read_bytes()).fingerprint() == mine["retired"]
    one_line_error(
        initialised("keys", "export", "--fingerprint", "ffff0000", env=admin_env()), 2, "no key"
    )
    listed = {
        u["name"]: u
        for u in json.loads(initialised("user", "ls", "--json", env=admin_env()).stdout)
    }
    assert listed["admin"]["key_fingerprint"] == mine["current"]
    assert listed["admin"]["retired_keys"] == [mine["retired"]]
    assert listed["admin"]["totp"] is False
    assert listed["scorer"]["retired_keys"][0] == rotated["retired"]
    assert len(listed["scorer"]["retired_keys"]) == 2


def test_keystore_passphrase_change(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    one_line_error(
        initialised("keys", "passphrase", env={**admin_env(), "SEALML_PASSPHRASE": "nope"}),
        2,
        "wrong keystore passphrase",
    )
    new = {"SEALML_NEW_PASSPHRASE": "another passphrase entirely"}
    assert initialised("keys", "passphrase", env={**admin_env(), **new}).code == 0
    out = tmp_path / "copy.csv"
    one_line_error(initialised("get", info["id"], "-o", str(out), env=admin_env()), 2, "passphrase")
    assert not out.exists()
    after = admin_env(SEALML_PASSPHRASE="another passphrase entirely")
    assert initialised("get", info["id"], "-o", str(out), env=after).code == 0
    assert out.read_bytes() == CSV.read_bytes()
    assert initialised("audit", "verify", env=after).code == 0


def test_service_key_file(initialised: Any, tmp_path: Path) -> None:
    key = tmp_path / "scorer.pem"
    result = initialised(
        "user", "add", "scorer", "--role", "service", "--key-file", str(key), env=admin_env()
    )
    assert result.code == 0, result.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    env = {"SEALML_PASSPHRASE": PASSPHRASE, "SEALML_USER": "scorer", "SEALML_KEY_FILE": str(key)}
    whoami = json.loads(initialised("whoami", "--json", env=env).stdout)
    assert whoami["name"] == "scorer" and whoami["via"] == "key-file"
    key.chmod(0o644)
    one_line_error(initialised("whoami", env=env), 2, "readable by others")
    one_line_error(
        initialised(
            "user", "add", "scorer2", "--role", "service", "--key-file", str(key), env=admin_env()
        ),
        2,
        "refusing to overwrite",
    )


def test_login_session_and_logout(initialised: Any, isolated_env: Path) -> None:
    result = initialised(
        "login",
        "--user",
        "admin",
        env={"SEALML_PASSPHRASE": PASSPHRASE, "SEALML_PASSWORD": ADMIN_PASSWORD},
    )
    assert result.code == 0, result.stderr
    tickets = list((isolated_env / "sessions").rglob("admin.json"))
    assert len(tickets) == 1 and stat.S_IMODE(tickets[0].stat().st_mode) == 0o600
    assert ADMIN_PASSWORD not in tickets[0].read_text()
    only_passphrase = {"SEALML_PASSPHRASE": PASSPHRASE}
    whoami = json.loads(initialised("whoami", "--json", env=only_passphrase).stdout)
    assert whoami["via"] == "session"
    assert initialised("logout", env=only_passphrase).code == 0
    one_line_error(initialised("whoami", env=only_passphrase), 2, "no principal")


def test_session_keeps_the_keystore_unlocked_until_logout(
    initialised: Any, isolated_env: Path, tmp_path: Path
) -> None:
    info = put_csv(initialised)
    login = {"SEALML_PASSPHRASE": PASSPHRASE, "SEALML_PASSWORD": ADMIN_PASSWORD}
    assert initialised("login", "--user", "admin", env=login).code == 0
    ticket = next((isolated_env / "sessions").rglob("admin.json"))
    assert json.loads(ticket.read_text())["keystore_box"]
    nothing = {"SEALML_PASSPHRASE": None, "SEALML_PASSWORD": None, "SEALML_USER": None}
    got = initialised("get", info["id"], "-o", str(tmp_path / "a.csv"), env=nothing)
    assert got.code == 0, got.stderr
    assert (tmp_path / "a.csv").read_bytes() == CSV.read_bytes()
    # A flipped byte in the kept key's box is refused, not ignored.
    data = json.loads(ticket.read_text())
    box = bytearray(base64.b64decode(data["keystore_box"]))
    box[-1] ^= 1
    ticket.write_text(json.dumps({**data, "keystore_box": base64.b64encode(box).decode()}))
    one_line_error(initialised("whoami", env=nothing), 2, "damaged")
    ticket.write_text(json.dumps(data))
    assert initialised("logout", env=nothing).code == 0
    one_line_error(
        initialised("get", info["id"], "-o", str(tmp_path / "b.csv"), env=nothing),
        2,
        "no principal",
    )
    assert not (tmp_path / "b.csv").exists()
    # --keep-locked: the session acts, but the keystore still needs its passphrase.
    result = initialised("login", "--user", "admin", "--keep-locked", env=login)
    assert result.code == 0, result.stderr
    assert json.loads(ticket.read_text())["keystore_box"] is None
    one_line_error(
        initialised("get", info["id"], "-o", str(tmp_path / "c.csv"), env=nothing),
        2,
        "passphrase is needed",
    )


def test_expired_session(initialised: Any, isolated_env: Path) -> None:
    initialised(
        "login",
        "--user",
        "admin",
        env={"SEALML_PASSPHRASE": PASSPHRASE, "SEALML_PASSWORD": ADMIN_PASSWORD},
    )
    ticket = next((isolated_env / "sessions").rglob("admin.json"))
    data = json.loads(ticket.read_text())
    data["expires_at"] = 1
    ticket.write_text(json.dumps(data))
    one_line_error(initialised("whoami", env={"SEALML_PASSPHRASE": PASSPHRASE}), 2, "expired")


def test_keys_rotate_and_shred(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    rotated = json.loads(initialised("keys", "rotate", "--json", env=admin_env()).stdout)
    assert rotated["kek"] == "local:2"
    one_line_error(initialised("keys", "shred", info["id"], env=admin_env()), 2, "--yes")
    assert initialised("get", info["id"], "-o", str(tmp_path / "a"), env=admin_env()).code == 0
    assert (
        initialised(
            "keys", "shred", info["id"], "--yes", "--reason", "erasure", env=admin_env()
        ).code
        == 0
    )
    one_line_error(
        initialised("get", info["id"], "-o", str(tmp_path / "b"), env=admin_env()), 2, "shredded"
    )


def test_audit_commands(initialised: Any, tmp_path: Path, ws_path: Path) -> None:
    put_csv(initialised)
    saved = tmp_path / "checkpoint.txt"
    written = initialised("audit", "checkpoint", "-o", str(saved), env=admin_env())
    assert written.code == 0 and f"wrote the latest checkpoint to {saved}" in written.stderr
    put_csv(initialised)
    report = json.loads(
        initialised("audit", "verify", "--trusted", str(saved), "--json", env=admin_env()).stdout
    )
    assert report["ok"] and report["events"] > 3
    events = json.loads(
        initialised("audit", "show", "--action", "artifact.*", "--json", env=admin_env()).stdout
    )
    assert [e["action"] for e in events] == ["artifact.put", "artifact.put"]
    every = json.loads(initialised("audit", "show", "--json", env=admin_env()).stdout)
    show_two = ["audit", "show", "--limit", "2", "--json"]
    first = json.loads(initialised(*show_two, env=admin_env()).stdout)
    latest = json.loads(initialised(*show_two, "--latest", env=admin_env()).stdout)
    assert [e["seq"] for e in first] == [0, 1]
    newest = [e["seq"] for e in latest]  # the last two, oldest first, newer than any before
    assert newest[0] + 1 == newest[1] and newest[0] > every[-1]["seq"]
    proof = tmp_path / "proof.json"
    assert (
        initialised("audit", "prove", str(events[0]["seq"]), "-o", str(proof), env=admin_env()).code
        == 0
    )
    vkey = initialised("audit", "vkey", env={}).stdout.strip()
    elsewhere = {"SEALML_WORKSPACE": str(tmp_path / "nowhere")}
    checked = initialised(
        "audit", "verify-proof", str(proof), "--vkey", vkey, "--json", env=elsewhere
    )
    assert checked.code == 0 and json.loads(checked.stdout)["event"]["action"] == "artifact.put"
    one_line_error(initialised("audit", "verify-proof", str(proof), env=elsewhere), 2, "--vkey")
    tampered = json.loads(proof.read_text())
    tampered["event"] = tampered["event"].replace("admin", "mallory")
    bad = tmp_path / "bad-proof.json"
    bad.write_text(json.dumps(tampered))
    one_line_error(
        initialised("audit", "verify-proof", str(bad), "--vkey", vkey, env=elsewhere),
        1,
        "not included",
    )
    bad.write_text("{not json")
    one_line_error(
        initialised("audit", "verify-proof", str(bad), "--vkey", vkey, env=elsewhere), 2, "json"
    )
    consistency = tmp_path / "consistency.json"
    assert (
        initialised(
            "audit", "consistency", str(saved), "-o", str(consistency), env=admin_env()
        ).code
        == 0
    )
    assert (
        initialised(
            "audit", "verify-consistency", str(consistency), "--vkey", vkey, env=elsewhere
        ).code
        == 0
    )
    exported = tmp_path / "events.jsonl"
    assert initialised("audit", "export", "-o", str(exported), env=admin_env()).code == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    assert all(len(line["leaf_hash"]) == 64 for line in lines)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600


def test_audit_verify_reports_tamper(initialised: Any, ws_path: Path) -> None:
    import sqlite3

    put_csv(initialised)
    connection = sqlite3.connect(ws_path / ".sealml" / "sealml.db")
    with connection:
        connection.execute("UPDATE ledger_events SET principal = 'mallory' WHERE seq = 1")
    connection.close()
    result = initialised("audit", "verify", env=admin_env())
    assert result.code == 1 and "column principal" in result.stdout
    assert result.stderr.strip() == "error: ledger verification failed"


def test_umask_keeps_outputs_private(initialised: Any, tmp_path: Path) -> None:
    info = put_csv(initialised)
    out = tmp_path / "copy.csv"
    initialised("get", info["id"], "-o", str(out), env=admin_env())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.stat().st_size == CSV.stat().st_size


def _passphrase_file(ws_path: Path, tmp_path: Path) -> Path:
    """The passphrase in a private file that sealml.toml names."""
    secret_file = tmp_path / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    secret_file.chmod(0o600)
    config = ws_path / "sealml.toml"
    config.write_text(
        config.read_text().replace("[keys]\n", f'[keys]\npassphrase_file = "{secret_file}"\n', 1)
    )
    return secret_file


def test_passphrase_file_named_in_config(initialised: Any, ws_path: Path, tmp_path: Path) -> None:
    secret_file = _passphrase_file(ws_path, tmp_path)
    env = {"SEALML_USER": "admin", "SEALML_PASSWORD": ADMIN_PASSWORD}
    assert initialised("put", str(CSV), "--kind", "dataset", env=env).code == 0
    secret_file.chmod(0o644)
    one_line_error(
        initialised("put", str(CSV), "--kind", "dataset", env=env), 2, "readable by others"
    )


def test_the_passphrase_file_follows_a_passphrase_change(
    initialised: Any, ws_path: Path, tmp_path: Path
) -> None:
    secret_file = _passphrase_file(ws_path, tmp_path)
    person = {"SEALML_USER": "admin", "SEALML_PASSWORD": ADMIN_PASSWORD}
    new = {**person, "SEALML_NEW_PASSPHRASE": "the next passphrase"}
    changed = initialised("keys", "passphrase", "--update-passphrase-file", env=new)
    assert changed.code == 0, changed.stderr
    assert secret_file.read_text() == "the next passphrase\n"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert initialised("put", str(CSV), "--kind", "dataset", env=person).code == 0
    again = initialised("keys", "passphrase", env={**person, "SEALML_NEW_PASSPHRASE": "third"})
    assert again.code == 0 and "still holds the old passphrase" in again.stderr


def test_the_command_starts_without_the_data_libraries() -> None:
    """Every `sealml` command pays the CLI's imports: pandas, scikit-learn, pyarrow, skops,
    matplotlib and Alembic load only in the commands that use them."""
    import subprocess
    import sys

    heavy = ["pandas", "sklearn", "pyarrow", "skops", "matplotlib", "scipy", "alembic"]
    script = f"import sys, sealml.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_names_that_look_like_markup_are_printed_as_they_are(
    initialised: Any, tmp_path: Path
) -> None:
    """Rich reads "[/x]" as a closing tag: an artifact named so made `put` fail after
    sealing and `ls` and `verify --all` fail for everyone (exit 70) until it was gone."""
    source = tmp_path / "note.txt"
    source.write_text("hello\n")
    names = ["[/evil]", "[bold red]boom", "[link=https://x.test]click[/link]"]
    for name in names:
        put = initialised("put", str(source), "--kind", "other", "--name", name, env=admin_env())
        assert put.code == 0, put.stderr
        assert name in put.stdout
    listed = initialised("ls", env=admin_env())
    assert listed.code == 0, listed.stderr
    assert all(name in listed.stdout for name in names)
    verified = initialised("verify", "--all", env=admin_env())
    assert verified.code == 0, verified.stderr
    assert all(name in verified.stdout for name in names)
    one_line_error(initialised("get", "[nothing]", "-o", str(tmp_path / "o"), env=admin_env()))
    env = {**admin_env(), "SEALML_NEW_PASSWORD": "p" * 12}
    added = initialised("user", "add", "[b]x", "--role", "auditor", env=env)
    assert added.code == 2 and "Traceback" not in added.stderr  # an invalid name, said plainly


def test_a_progress_bar_shows_a_bracketed_file_name_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, sealing `[/x].csv` drew its progress bar with the name read as
    markup (and failed)."""
    from rich.console import Console

    from sealml.cli import progress

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120, markup=False)
    monkeypatch.setattr(progress, "err", terminal)
    with progress.transfer("sealing [/x].csv", progress.THRESHOLD * 2) as advance:
        advance(progress.THRESHOLD)
    assert "[/x].csv" in screen.getvalue()
