"""in-toto Statement v1 with a SLSA Provenance v1 predicate, for one pipeline stage run.

Subjects are the stage's outputs, each with the SHA-256 and BLAKE3 digests of its bytes
and the sealml artifact id as an annotation. Resolved dependencies are the inputs (same
digests) and the pipeline code. The statement is signed in a DSSE envelope by the
principal who ran the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..crypto.canonical import canonical_json, parse_json
from ..crypto.dsse import EnvelopeError, open_envelope, sign_envelope
from ..crypto.signing import Signer, VerifyingKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://sealml.dev/pipeline-stage/v1"
ARTIFACT_URI = "sealml:artifact:"


@dataclass(frozen=True)
class Material:
    """A subject or dependency: a named thing with digests."""

    name: str
    digests: dict[str, str]
    artifact_id: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class StageProvenance:
    """What is attested about one stage run."""

    pipeline: str
    stage: str
    parameters: dict[str, Any]
    outputs: list[Material]
    inputs: list[Material]
    code: Material
    executor: str
    principal: str
    run_id: str
    started: str
    finished: str
    environment: dict[str, Any] = field(default_factory=dict)


def statement(provenance: StageProvenance) -> dict[str, Any]:
    """The in-toto statement (a JSON object) for *provenance*."""
    subjects = [
        {
            "name": output.name,
            "digest": output.digests,
            "annotations": {"sealml_artifact": output.artifact_id},
        }
        for output in provenance.outputs
    ]
    dependencies = [
        {"name": item.name, "uri": ARTIFACT_URI + str(item.artifact_id), "digest": item.digests}
        for item in provenance.inputs
    ]
    dependencies.append(
        {
            "name": provenance.code.name,
            "uri": str(provenance.code.uri),
            "digest": provenance.code.digests,
        }
    )
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": provenance.pipeline,
                    "stage": provenance.stage,
                    "parameters": provenance.parameters,
                },
                "internalParameters": {
                    "executor": provenance.executor,
                    "principal": provenance.principal,
                    "environment": provenance.environment,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": f"https://sealml.dev/executor/{provenance.executor}"},
                "metadata": {
                    "invocationId": f"{provenance.run_id}/{provenance.stage}",
                    "startedOn": provenance.started,
                    "finishedOn": provenance.finished,
                },
            },
        },
    }


def sign_statement(document: dict[str, Any], key: Signer) -> bytes:
    """The DSSE envelope (canonical JSON bytes) of *document*, signed by *key*; the keyid is
    the SHA-256 fingerprint of the public key."""
    envelope = sign_envelope(
        PAYLOAD_TYPE, canonical_json(document), key, key.public_key.fingerprint()
    )
    return canonical_json(envelope)


class ProvenanceError(ValueError):
    """An attestation that is malformed, unsigned or not what it claims."""


def open_statement(data: bytes, keys: dict[str, VerifyingKey]) -> tuple[dict[str, Any], str]:
    """Verify an envelope and parse its statement; returns (statement, signing keyid)."""
    try:
        envelope = parse_json(data)
        payload_type, payload, keyid = open_envelope(envelope, keys)
    except (ValueError, EnvelopeError) as error:
        raise ProvenanceError(str(error)) from None
    if payload_type != PAYLOAD_TYPE:
        raise ProvenanceError(f"unexpected payload type {payload_type!r}")
    try:
        document = parse_json(payload)
    except ValueError:
        raise ProvenanceError("the attested statement is not JSON") from None
    if (
        not isinstance(document, dict)
        or document.get("_type") != STATEMENT_TYPE
        or document.get("predicateType") != PREDICATE_TYPE
        or not isinstance(document.get("subject"), list)
    ):
        raise ProvenanceError("not an in-toto statement with a SLSA provenance predicate")
    return document, keyid


def subjects(document: dict[str, Any]) -> list[Material]:
    return [
        Material(
            name=str(item.get("name")),
            digests=dict(item.get("digest", {})),
            artifact_id=(item.get("annotations") or {}).get("sealml_artifact"),
        )
        for item in document["subject"]
    ]


def build_environment(document: dict[str, Any]) -> dict[str, Any]:
    """The environment the statement says the stage ran in (empty when it names none)."""
    try:
        found = document["predicate"]["buildDefinition"]["internalParameters"]["environment"]
    except (KeyError, TypeError):
        return {}
    return dict(found) if isinstance(found, dict) else {}


def dependencies(document: dict[str, Any]) -> list[Material]:
    """Input artifacts named by the statement (not the code entry)."""
    found = []
    try:
        entries = document["predicate"]["buildDefinition"]["resolvedDependencies"]
    except (KeyError, TypeError):
        raise ProvenanceError("the statement has no resolved dependencies") from None
    for item in entries:
        uri = str(item.get("uri", ""))
        if uri.startswith(ARTIFACT_URI):
            found.append(
                Material(
                    name=str(item.get("name")),
                    digests=dict(item.get("digest", {})),
                    artifact_id=uri[len(ARTIFACT_URI) :],
                    uri=uri,
                )
            )
    return found
