"""CycloneDX SBOMs: valid against the 1.6 schema, built from the training run's signed
environment, bound to the registered model, refused when altered."""

from __future__ import annotations

import hashlib
import io
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from sealml.errors import IntegrityError
from sealml.models.formats import dump_skops
from sealml.provenance.environment import environment
from sealml.provenance.sbom import SbomSubject, environment_sbom, model_sha256

from ..conftest import reopen
from ..models.test_registry import ENGINEER_PASSWORD, SCIENTIST_PASSWORD, model_pipeline, team
from ..models.test_registry import train as train_model

__all__ = ["model_pipeline", "team"]  # fixtures used here

SUBJECT = SbomSubject("credit", "ab" * 16, "cd" * 32, "registering process")


def validate(document: bytes) -> dict[str, Any]:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert error is None, error
    parsed: dict[str, Any] = json.loads(document)
    return parsed


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["components"]}


def test_the_sbom_of_this_environment_is_valid_cyclonedx() -> None:
    env = environment()
    document = validate(environment_sbom(SUBJECT, env))
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    subject = document["metadata"]["component"]
    assert subject["type"] == "machine-learning-model" and subject["name"] == "credit"
    assert subject["hashes"] == [{"alg": "SHA-256", "content": "cd" * 32}]
    components = by_name(document)
    assert len(components) == len(env["packages"])  # type: ignore[arg-type]
    sklearn = components["scikit-learn"]
    assert sklearn["version"] == metadata.version("scikit-learn")
    assert sklearn["purl"] == f"pkg:pypi/scikit-learn@{sklearn['version']}"
    edges = {d["ref"]: set(d.get("dependsOn", [])) for d in document["dependencies"]}
    assert f"pkg:pypi/numpy@{metadata.version('numpy')}" in edges[sklearn["bom-ref"]]
    assert edges[subject["bom-ref"]] == {c["bom-ref"] for c in components.values()}
    properties = {p["name"]: p["value"] for p in document["metadata"]["properties"]}
    assert properties["sealml:environment-source"] == "registering process"


def test_packages_that_are_not_installed_here_are_listed_as_recorded() -> None:
    recorded = {"python": "3.11.7", "packages": {"Torch_Vision": "0.1.2", "numpy": "0.0.1"}}
    document = validate(environment_sbom(SUBJECT, recorded))
    components = by_name(document)
    assert set(components) == {"torch-vision", "numpy"}
    # numpy is installed, but not that version: nothing is borrowed from this install
    assert "licenses" not in components["numpy"]
    assert all(not d.get("dependsOn") for d in document["dependencies"][1:])
    assert model_sha256(json.dumps(document).encode()) == "cd" * 32
    assert model_sha256(b"not json") is None


def test_a_registered_version_carries_the_sbom_of_its_training_run(
    team: Path, model_pipeline: Path, tmp_path: Path, cli: Any
) -> None:
    artifacts = train_model(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        version = sam.register_model(artifacts["model"], "credit")
        assert version.sbom_id is not None
        info = sam.info(version.sbom_id)
        assert info.parents == (version.artifact_id,)
        assert info.annotations["report"] == "sbom"
        model = sam.read_bytes(version.artifact_id)
        trained_in = sam.verify_provenance(version.artifact_id)[0].environment
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        document = validate(erin.model_sbom("credit", version.version))
    assert model_sha256(json.dumps(document).encode()) == hashlib.sha256(model).hexdigest()
    recorded = {canonicalize_name(name) for name in trained_in["packages"]}
    assert {c["name"] for c in document["components"]} == recorded
    properties = {p["name"]: p["value"] for p in document["metadata"]["properties"]}
    assert properties["sealml:environment-source"] == f"provenance {version.provenance_id}"
    card = next(iter(_card_text(team)))
    assert f"CycloneDX {version.sbom_id}" in card

    output = tmp_path / "credit.cdx.json"
    env = {"SEALML_USER": "erin", "SEALML_PASSWORD": ENGINEER_PASSWORD}
    result = cli("model", "sbom", "credit@1", "-o", str(output), env=_env(env))
    assert result.code == 0, result.stderr
    validate(output.read_bytes())
    again = cli("model", "sbom", "credit@1", "-o", str(output), env=_env(env))
    assert again.code == 2 and "already exists" in again.stderr


def _env(extra: dict[str, str]) -> dict[str, str]:
    from ..conftest import PASSPHRASE

    return {"SEALML_PASSPHRASE": PASSPHRASE, **extra}


def _card_text(path: Path) -> list[str]:
    with reopen(path, "sam", SCIENTIST_PASSWORD) as sam:
        return [
            sam.read_bytes(c.id).decode() for c in sam.ls(kind="report", name="credit-v1-card.md")
        ]


def test_an_uploaded_model_gets_the_sbom_of_the_registering_process(team: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit([[0], [1]], [0, 1])
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        ref = sam.put(io.BytesIO(dump_skops(model)), "model", "tree.skops").id
        version = sam.register_model(ref, "tree")
        document = validate(sam.model_sbom("tree", version.version))
    properties = {p["name"]: p["value"] for p in document["metadata"]["properties"]}
    assert properties["sealml:environment-source"] == "registering process"


def test_an_altered_sbom_is_refused(team: Path, model_pipeline: Path) -> None:
    artifacts = train_model(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        version = sam.register_model(artifacts["model"], "credit")
        with sam.db.read() as session:
            blob = sam.blobs.path_of(sam._find(session, version.sbom_id).blob_name)  # type: ignore[attr-defined]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with reopen(team, "erin", ENGINEER_PASSWORD) as erin:
        with pytest.raises(IntegrityError):
            erin.model_sbom("credit", version.version)
        with pytest.raises(IntegrityError):
            erin.resolve_model("credit", version.version)


def test_an_sbom_swapped_for_another_models_is_refused(team: Path, model_pipeline: Path) -> None:
    """Pointing version 1's record at version 2's SBOM breaks the signed statement; both
    signed statements are intact, so this is what an attacker with the database can do."""
    import sqlite3

    artifacts = train_model(team, model_pipeline)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        first = sam.register_model(artifacts["model"], "credit")
        other = train_model(team, model_pipeline, trees=7)
    with reopen(team, "sam", SCIENTIST_PASSWORD) as sam:
        second = sam.register_model(other["model"], "credit")
    with sqlite3.connect(team / ".sealml" / "sealml.db") as db:
        db.execute("UPDATE model_versions SET sbom_id = ? WHERE version = 1", (second.sbom_id,))
    with (
        reopen(team, "erin", ENGINEER_PASSWORD) as erin,
        pytest.raises(IntegrityError, match="record differs from statement"),
    ):
        erin.model_sbom("credit", first.version)


def test_statements_signed_before_sboms_still_read() -> None:
    """Versions registered before this release name no SBOM in their signed statement."""
    from sealml.models.registry import VersionFacts

    facts = VersionFacts("credit", 1, "a" * 32, "blake3:00", "b" * 32, "c" * 32, None, None,
                         "sam", "sam", "2026-01-01T00:00:00Z")  # fmt: skip
    old = json.loads(facts.statement())
    del old["sbom_id"]
    assert VersionFacts.from_statement(old) == facts
    del old["scan_id"]
    with pytest.raises(KeyError):
        VersionFacts.from_statement(old)
