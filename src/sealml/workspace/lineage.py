"""Lineage and provenance: where an artifact came from, what was made from it, and proof."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import (
    ArtifactParentRow,
    ArtifactRow,
    AttestationRow,
    RunRow,
    StageRunRow,
)
from ..errors import IntegrityError
from ..provenance import intoto
from ..store.artifacts import ArtifactInfo, info_of
from .once import once, verifies_once
from .runs import RunOperations

OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = "https://sealml.dev/sealml"


@dataclass
class ProvenanceStep:
    """One artifact on the chain back to the sources."""

    artifact: ArtifactInfo
    status: str  # "attested" or "source"
    attestation: str | None = None
    signer: str | None = None
    inputs: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)  # as its provenance states


@dataclass
class LineageGraph:
    """Everything an artifact came from and everything made from it."""

    root: str
    nodes: dict[str, ArtifactInfo]
    edges: list[tuple[str, str]]  # (parent, child)
    attested: dict[str, str]  # artifact → attestation

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.root,
            "nodes": [
                {**info.to_dict(), "attestation": self.attested.get(i)}
                for i, info in self.nodes.items()
            ],
            "edges": [{"parent": p, "child": c} for p, c in self.edges],
        }


class LineageOperations(RunOperations):
    """``sealml lineage`` and ``sealml provenance verify``."""

    @verifies_once
    def verify_provenance(self, ref: str) -> list[ProvenanceStep]:
        """Walk back from an artifact to its sources, checking at every step the sealed
        content, the creator's signature, the ledger record, the DSSE envelope and its
        signer, the subject digests and that each declared input is what was consumed."""
        with self.db.read() as session:
            start = self._find(session, ref)
        self.authorize("artifact:verify", f"artifact:{start.id}", action="provenance.verify")
        with self.db.read() as session:
            steps = self._provenance_chain(session, start.id)
        self.record([self.event("provenance.verify", f"artifact:{start.id}", steps=len(steps))])
        return steps

    def _provenance_chain(self, session: Session, start_id: str) -> list[ProvenanceStep]:
        """Every verified step from *start_id* back to its sources (no authorisation)."""
        return list(once(self, "chain", start_id, lambda: self._walk_chain(session, start_id)))

    def _walk_chain(self, session: Session, start_id: str) -> list[ProvenanceStep]:
        steps: list[ProvenanceStep] = []
        pending, seen = [start_id], set()
        while pending:
            artifact_id = pending.pop(0)
            if artifact_id in seen:
                continue
            seen.add(artifact_id)
            row = session.get(ArtifactRow, artifact_id)
            if row is None:
                raise IntegrityError(f"artifact {artifact_id} on the provenance chain is missing")
            steps.append(self._verify_step(session, row))
            pending.extend(steps[-1].inputs)
        return steps

    def _verify_step(self, session: Session, row: ArtifactRow) -> ProvenanceStep:
        self._check_signed(session, row)
        self._check_ledger_put(session, row)
        info = info_of(row)
        if row.shredded_at is not None:
            raise IntegrityError(f"artifact {row.id} on the provenance chain was shredded")
        digests = self._content_digests(session, row)
        link = session.get(AttestationRow, row.id)
        if link is None:
            if info.parents:
                raise IntegrityError(
                    f"artifact {row.id} ({info.name}) derives from other artifacts "
                    "but has no provenance attestation"
                )
            return ProvenanceStep(info, "source")
        document = self._check_attestation(session, row, digests, link.attestation_id)
        inputs = intoto.dependencies(document)
        for item in inputs:
            source = session.get(ArtifactRow, str(item.artifact_id))
            if source is None:
                raise IntegrityError(f"artifact {row.id}: its input {item.artifact_id} is missing")
            algorithm, _, value = source.digest.partition(":")
            if item.digests.get(algorithm) != value:
                raise IntegrityError(
                    f"artifact {row.id}: input {item.name!r} differs from what was consumed"
                )
        if sorted(str(i.artifact_id) for i in inputs) != sorted(info.parents):
            raise IntegrityError(f"artifact {row.id}: signed parents differ from its provenance")
        return ProvenanceStep(
            info,
            "attested",
            link.attestation_id,
            row.creator,
            [str(i.artifact_id) for i in inputs],
            intoto.build_environment(document),
        )

    def lineage(self, ref: str) -> LineageGraph:
        """Ancestors and descendants of an artifact (attestations are not nodes)."""
        with self.db.read() as session:
            root = self._find(session, ref)
            if not self.policy.allows(self.require_actor().principal.roles, "artifact:verify"):
                self.authorize(f"{root.kind}:read", f"artifact:{root.id}", action="lineage")
            nodes: dict[str, ArtifactInfo] = {}
            edges: set[tuple[str, str]] = set()
            for column, other in (
                (ArtifactParentRow.child_id, ArtifactParentRow.parent_id),
                (ArtifactParentRow.parent_id, ArtifactParentRow.child_id),
            ):
                frontier = [root.id]
                while frontier:
                    current = frontier.pop()
                    for (linked,) in session.execute(select(other).where(column == current)):
                        edge = (
                            (linked, current)
                            if column is ArtifactParentRow.child_id
                            else (current, linked)
                        )
                        if edge not in edges:
                            edges.add(edge)
                            frontier.append(linked)
            for artifact_id in {root.id, *(n for e in edges for n in e)}:
                row = session.get(ArtifactRow, artifact_id)
                if row is not None:
                    nodes[artifact_id] = info_of(row)
            attested = {
                subject: attestation
                for subject, attestation in session.execute(
                    select(AttestationRow.subject_id, AttestationRow.attestation_id).where(
                        AttestationRow.subject_id.in_(list(nodes))
                    )
                )
            }
        return LineageGraph(root.id, nodes, sorted(edges), attested)

    def openlineage_events(self) -> list[dict[str, Any]]:
        """OpenLineage RunEvents (COMPLETE) for every executed stage, for lineage tools."""
        self.authorize("artifact:verify", "lineage:*", action="lineage.export")
        namespace = f"sealml://{self.config.workspace.id}"
        events = []
        with self.db.read() as session:
            rows = session.execute(
                select(StageRunRow, RunRow)
                .join(RunRow, RunRow.id == StageRunRow.run_id)
                .order_by(StageRunRow.finished_at)
            ).all()
            for stage_run, run in rows:
                outputs = [session.get(ArtifactRow, i) for i in _json_values(stage_run.outputs)]
                inputs = {parent for o in outputs if o is not None for parent in info_of(o).parents}
                input_rows = [session.get(ArtifactRow, i) for i in sorted(inputs)]
                events.append(
                    {
                        "eventType": "COMPLETE",
                        "eventTime": stage_run.finished_at,
                        "producer": PRODUCER,
                        "schemaURL": OPENLINEAGE_SCHEMA,
                        "run": {
                            "runId": str(uuid.UUID(stage_run.id)),
                            "facets": {
                                "parent": {
                                    "_producer": PRODUCER,
                                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json",
                                    "run": {"runId": str(uuid.UUID(run.id))},
                                    "job": {"namespace": namespace, "name": run.pipeline},
                                }
                            },
                        },
                        "job": {
                            "namespace": namespace,
                            "name": f"{run.pipeline}.{stage_run.stage}",
                        },
                        "inputs": [_dataset(namespace, r) for r in input_rows if r is not None],
                        "outputs": [_dataset(namespace, r) for r in outputs if r is not None],
                    }
                )
        return events


def _json_values(text: str) -> list[str]:
    import json

    return [str(v) for v in json.loads(text).values()]


def _dataset(namespace: str, row: ArtifactRow) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": row.name,
        "facets": {
            "sealml": {
                "_producer": PRODUCER,
                "_schemaURL": "https://sealml.dev/openlineage/ArtifactFacet.json",
                "artifact": row.id,
                "digest": row.digest,
                "kind": row.kind,
            }
        },
    }
