"""`sealml data` commands on files and artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ..conftest import DATA, admin_env
from .test_cli import one_line_error

GERMAN = DATA / "german_credit.csv"


@pytest.fixture
def ready(cli: Any) -> Any:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    return cli


def test_schema_then_validate(ready: Any, tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    assert ready("data", "schema", str(GERMAN), "-o", str(schema), env=admin_env()).code == 0
    ok = ready("data", "validate", str(GERMAN), "--schema", str(schema), "--json", env=admin_env())
    assert ok.code == 0 and json.loads(ok.stdout)["ok"]
    frame = pd.read_csv(GERMAN)
    frame["duration_months"] = frame["duration_months"].astype(object)
    frame.loc[7, "duration_months"] = "lots"
    drifted = tmp_path / "drifted.csv"
    frame.to_csv(drifted, index=False)
    bad = ready(
        "data", "validate", str(drifted), "--schema", str(schema), "--json", env=admin_env()
    )
    assert bad.code == 1
    violations = json.loads(bad.stdout)["violations"]
    assert violations == [
        {
            "column": "duration_months",
            "check": "type int",
            "count": 1,
            "rows": [7],
            "examples": ["lots"],
        }
    ]
    assert (
        "violation"
        in ready("data", "validate", str(drifted), "--schema", str(schema), env=admin_env()).stdout
    )


def test_validate_bad_inputs(ready: Any, tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("columns: {a: {dtype: number}}\n")
    one_line_error(
        ready("data", "validate", str(GERMAN), "--schema", str(schema), env=admin_env()), 2, "dtype"
    )
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b'a,b\n1,"open\n')
    schema.write_text("columns: {a: {dtype: int}}\n")
    one_line_error(
        ready("data", "validate", str(broken), "--schema", str(schema), env=admin_env()),
        2,
        "EOF inside string",
    )
    one_line_error(
        ready("data", "validate", "no-such-thing", "--schema", str(schema), env=admin_env()),
        2,
        "no artifact",
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[" * 100_000, "nested too deeply"),  # PyYAML used to raise RecursionError
        (bytes(range(256)), "not UTF-8"),
        (b"a: [1, 2\n", "not valid YAML"),
    ],
    ids=["deep", "binary", "syntax"],
)
def test_unreadable_yaml_files_are_usage_errors(
    ready: Any, tmp_path: Path, content: bytes, needle: str
) -> None:
    document = tmp_path / "document.yaml"
    document.write_bytes(content)
    for option in (["validate", "--schema"], ["pii", "--actions"]):
        command = ["data", option[0], str(GERMAN), option[1], str(document)]
        one_line_error(ready(*command, env=admin_env()), 2, needle)


def test_pii_report_actions_seal_and_reveal(ready: Any, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    pd.DataFrame(
        {
            "email": [f"user{i}@example.org" for i in range(60)],
            "age": [20 + i % 50 for i in range(60)],
            "zip": [f"{10000 + i % 7}" for i in range(60)],
            "note": ["ok"] * 60,
        }
    ).to_csv(people, index=False)
    report = json.loads(ready("data", "pii", str(people), "--json", env=admin_env()).stdout)
    assert {c["column"]: c["pii_type"] for c in report["columns"]} == {
        "email": "email",
        "age": None,
        "zip": "postcode",
        "note": None,
    }
    actions = tmp_path / "actions.yaml"
    actions.write_text(
        "email: tokenise\n"
        "age: {action: generalise, band: 10}\n"
        "zip: {action: generalise, prefix: 3}\n"
    )
    sealed = ready(
        "data",
        "pii",
        str(people),
        "--actions",
        str(actions),
        "--seal",
        "people-protected",
        "--quasi",
        "age,zip",
        "--k",
        "3",
        "--json",
        env=admin_env(),
    )
    assert sealed.code == 0, sealed.stderr
    result = json.loads(sealed.stdout)
    assert result["anonymity"]["k"] >= 3 and set(result["sealed"]) == {"dataset", "vault"}
    out = tmp_path / "protected.parquet"
    assert ready("get", "people-protected", "-o", str(out), env=admin_env()).code == 0
    protected = pd.read_parquet(out)
    assert protected["email"].str.startswith("tk_").all()
    token = protected["email"].iloc[0]
    revealed = json.loads(
        ready(
            "data", "reveal", token, "--vault", result["sealed"]["vault"], "--json", env=admin_env()
        ).stdout
    )
    assert revealed[token].endswith("@example.org")
    one_line_error(
        ready("data", "pii", str(people), "--actions", str(actions), env=admin_env()), 2, "--seal"
    )


def test_reveal_needs_permission(ready: Any, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    pd.DataFrame({"email": ["a@example.org", "b@example.org"]}).to_csv(people, index=False)
    actions = tmp_path / "actions.yaml"
    actions.write_text("email: tokenise\n")
    result = json.loads(
        ready(
            "data",
            "pii",
            str(people),
            "--actions",
            str(actions),
            "--seal",
            "p",
            "--json",
            env=admin_env(),
        ).stdout
    )
    ready(
        "user",
        "add",
        "dana",
        "--role",
        "data-scientist",
        env={**admin_env(), "SEALML_NEW_PASSWORD": "dana-password"},
    )
    dana = {**admin_env(), "SEALML_USER": "dana", "SEALML_PASSWORD": "dana-password"}
    one_line_error(
        ready("data", "reveal", "tk_x", "--vault", result["sealed"]["vault"], env=dana),
        2,
        "permission denied",
    )


def test_screen_command(ready: Any, tmp_path: Path) -> None:
    frame = pd.read_csv(GERMAN)
    doubled = tmp_path / "doubled.csv"
    pd.concat([frame, frame.iloc[:3]]).to_csv(doubled, index=False)
    result = ready(
        "data", "screen", str(doubled), "--label", "credit_risk", "--reference", str(GERMAN),
        "--seal", "credit-clean", "--json", env=admin_env(),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["flagged"]["duplicate"]["rows"] == [1000, 1001, 1002]
    assert set(report["sealed"]) == {"dataset", "report"}
    gated = ready(
        "data",
        "screen",
        str(doubled),
        "--label",
        "credit_risk",
        "--max-flagged",
        "0.001",
        env=admin_env(),
    )
    one_line_error(gated, 1, "over the 0.1%")
    one_line_error(
        ready("data", "screen", str(doubled), "--label", "nope", env=admin_env()),
        2,
        "no label column",
    )


def test_an_artifact_named_without_a_suffix_is_read_by_its_media_type(ready: Any) -> None:
    """`put german_credit.csv --name credit` records text/csv, so `data pii credit` reads it
    as CSV (the name alone no longer tells)."""
    env = admin_env()
    put = ready("put", str(GERMAN), "--kind", "dataset", "--name", "credit", "--json", env=env)
    assert put.code == 0, put.stderr
    assert json.loads(put.stdout)["media_type"] == "text/csv"
    report = ready("data", "pii", "credit", "--json", env=env)
    assert report.code == 0, report.stderr
    assert "checking_status" in {c["column"] for c in json.loads(report.stdout)["columns"]}
