"""Known vulnerabilities from an offline OSV copy: range evaluation with known answers, the
zip and folder forms, malformed input, and the check of a registered version's SBOM."""

from __future__ import annotations

import json
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from sealml.errors import UsageError
from sealml.ledger import EventFilter
from sealml.provenance.advisories import MAX_RECORD_BYTES, AdvisoryDatabase

from ..conftest import admin_env, reopen
from ..models.test_registry import SCIENTIST_PASSWORD, model_pipeline, register, team

__all__ = ["model_pipeline", "team"]  # fixtures used here


def record(ident: str, package: str, *events: dict[str, str], **extra: Any) -> dict[str, Any]:
    affected: dict[str, Any] = {"package": {"ecosystem": "PyPI", "name": package}}
    if events:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": list(events)}]
    affected.update(extra.pop("affected", {}))
    return {"id": ident, "summary": f"{ident} in {package}", "affected": [affected], **extra}


def write_zip(path: Path, *records: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for item in records:
            archive.writestr(f"{item['id']}.json", json.dumps(item))
    return path


def ids(database: AdvisoryDatabase, packages: dict[str, str]) -> list[str]:
    return [f.advisory for f in database.findings(packages)]


RECORDS = (
    record("OSV-1", "demo", {"introduced": "0"}, {"fixed": "2.0"}),
    record("OSV-2", "demo", {"introduced": "1.0"}, {"fixed": "1.5"}, {"introduced": "3.0"}),
    record("OSV-3", "demo", {"introduced": "0"}, {"last_affected": "1.4"}),
    record("OSV-4", "Demo_Pkg", affected={"versions": ["0.9", "1.2.post1"]}),
    record("OSV-5", "demo", {"introduced": "0"}, withdrawn="2026-01-01T00:00:00Z"),
    record("OSV-6", "other", {"introduced": "0"}),
    {"id": "GO-1", "affected": [{"package": {"ecosystem": "Go", "name": "demo"}}]},
)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.5", ["OSV-1", "OSV-3"]),
        ("1.2", ["OSV-1", "OSV-2", "OSV-3"]),
        ("1.4", ["OSV-1", "OSV-2", "OSV-3"]),  # last_affected is included
        ("1.4.1", ["OSV-1", "OSV-2"]),
        ("1.5", ["OSV-1"]),  # fixed is excluded
        ("2.0rc1", ["OSV-1"]),  # a pre-release of the fix is still before it
        ("2.0", []),
        ("3.0", ["OSV-2"]),  # a second interval, never closed
    ],
)
def test_ranges_are_evaluated_as_the_schema_says(
    tmp_path: Path, version: str, expected: list[str]
) -> None:
    database = AdvisoryDatabase.load(write_zip(tmp_path / "all.zip", *RECORDS))
    assert ids(database, {"demo": version}) == expected


def test_listed_versions_names_and_other_ecosystems(tmp_path: Path) -> None:
    database = AdvisoryDatabase.load(write_zip(tmp_path / "all.zip", *RECORDS))
    assert ids(database, {"demo-pkg": "1.2.post1"}) == ["OSV-4"]  # names compare canonically
    assert ids(database, {"demo.pkg": "1.2"}) == []
    assert ids(database, {"unlisted": "1.0"}) == []
    assert database.records == len(RECORDS)


def test_a_bound_that_cannot_be_read_is_never_taken_as_clean(tmp_path: Path) -> None:
    database = AdvisoryDatabase.load(
        write_zip(tmp_path / "all.zip", record("OSV-9", "odd", {"introduced": "not a version"}))
    )
    (finding,) = database.findings({"odd": "1.0"})
    assert finding.advisory == "OSV-9" and not finding.evaluated


def test_a_folder_reads_like_the_zip(tmp_path: Path) -> None:
    folder = tmp_path / "osv"
    (folder / "nested").mkdir(parents=True)
    for item in RECORDS:
        (folder / "nested" / f"{item['id']}.json").write_text(json.dumps(item))
    (folder / "README.txt").write_text("not a record")
    from_folder = AdvisoryDatabase.load(folder)
    from_zip = AdvisoryDatabase.load(write_zip(tmp_path / "all.zip", *RECORDS))
    assert from_folder.findings({"demo": "1.2"}) == from_zip.findings({"demo": "1.2"})
    assert from_folder.sha256 != from_zip.sha256  # each names what it read


@pytest.mark.parametrize(
    "affected",
    ["not a list", [3], [{"package": "demo"}], [{"ranges": {"type": "ECOSYSTEM"}}],
     [{"ranges": [{"events": "introduced"}]}], [{"versions": "1.0"}]],
)  # fmt: skip
def test_records_of_the_wrong_shape_are_refused(tmp_path: Path, affected: Any) -> None:
    path = write_zip(tmp_path / "all.zip", {"id": "BAD-1", "affected": affected})
    with pytest.raises(UsageError, match=r"BAD-1\.json is malformed"):
        AdvisoryDatabase.load(path)


@pytest.mark.parametrize("problem", ["json", "id", "zip", "text", "huge"])
def test_malformed_copies_are_refused(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "all.zip"
    if problem == "json":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("BAD.json", "{not json")
    elif problem == "id":
        write_zip(path, {"id": "X"}).unlink()
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("X.json", json.dumps({"affected": []}))
    elif problem == "zip":
        write_zip(path, *RECORDS)
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0xFF  # a flipped byte inside a compressed member
        path.write_bytes(bytes(data))
    elif problem == "text":
        path.write_text("hello")
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("BIG.json", b" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(UsageError):
        AdvisoryDatabase.load(path)


def test_a_registered_version_is_checked_against_its_sbom(
    team: Path, model_pipeline: Path, tmp_path: Path, cli: Any
) -> None:
    version = register(team, model_pipeline)
    sklearn = metadata.version("scikit-learn")
    affecting = write_zip(
        tmp_path / "bad.zip",
        record("PYSEC-X", "scikit-learn", {"introduced": "0"}),
        record("PYSEC-Y", "numpy", {"introduced": "0"}, {"fixed": "0.1"}),
    )
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        (finding,) = sam.model_vulnerabilities("credit", version, AdvisoryDatabase.load(affecting))
    assert (finding.package, finding.version, finding.advisory) == (
        "scikit-learn",
        sklearn,
        "PYSEC-X",
    )
    result = cli(
        "model", "vulnerabilities", "credit", "--advisories", str(affecting), "--json",
        env=admin_env(),
    )  # fmt: skip
    assert result.code == 1, result.stderr
    assert [f["advisory"] for f in json.loads(result.stdout)["findings"]] == ["PYSEC-X"]
    clean = write_zip(tmp_path / "clean.zip", record("PYSEC-Y", "numpy", {"fixed": "0.1"}))
    result = cli(
        "model", "vulnerabilities", "credit@1", "--advisories", str(clean), env=admin_env()
    )
    assert result.code == 0 and "no known vulnerability" in result.stdout
    with reopen(team) as admin:
        checks = admin.audit_events(EventFilter(action="model.vulnerabilities"))
    assert [c.fields()["details"]["findings"] for c in checks] == [
        ["scikit-learn PYSEC-X"],
        ["scikit-learn PYSEC-X"],
        [],
    ]
    assert checks[2].fields()["details"]["advisories_sha256"] == AdvisoryDatabase.load(clean).sha256
    shown = cli("model", "show", "credit@1", "--json", env=admin_env())
    assert json.loads(shown.stdout)["vulnerability_check"]["findings"] == []
    with reopen(team) as admin:
        checked = admin.show_model("credit", version).vulnerability_check
    assert checked is not None and checked[1] == ()
    missing = cli("model", "vulnerabilities", "credit", "--advisories", str(tmp_path / "none"))
    assert missing.code == 2 and "does not exist" in missing.stderr


def test_a_gate_can_ask_for_a_recent_clean_check(
    team: Path, model_pipeline: Path, tmp_path: Path
) -> None:
    from sealml.config import GateSection
    from sealml.errors import PermissionDeniedError

    from ..models.test_registry import ENGINEER_PASSWORD

    version = register(team, model_pipeline)
    with reopen(team) as admin:
        admin.config.registry.gates["staging"] = GateSection(max_vulnerability_check_age_days=30)
        admin.approve_policy()

    def gate(erin: Any) -> Any:
        (check,) = [c for c in erin.gate_report("credit", version, "staging")
                    if c.check == "known vulnerabilities"]  # fmt: skip
        return check

    affecting = AdvisoryDatabase.load(
        write_zip(tmp_path / "bad.zip", record("PYSEC-X", "scikit-learn", {"introduced": "0"}))
    )
    clean = AdvisoryDatabase.load(write_zip(tmp_path / "clean.zip", record("PYSEC-Y", "nothing")))
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        assert (gate(erin).passed, gate(erin).measured) == (False, "never checked")
        with pytest.raises(PermissionDeniedError, match="no `sealml model vulnerabilities`"):
            erin.promote_model("credit", version, "staging")
        erin.model_vulnerabilities("credit", version, affecting)
        assert (gate(erin).passed, gate(erin).measured) == (False, "1 found")
        erin.model_vulnerabilities("credit", f"v{version}", clean)
        assert gate(erin).passed  # the newest check counts
        erin.promote_model("credit", version, "staging")
    with reopen(team) as admin:
        admin.config.registry.gates["staging"] = GateSection(max_vulnerability_check_age_days=0)
        admin.approve_policy()
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        assert (gate(erin).passed, gate(erin).measured) == (False, "0 days old")
