"""Running pipelines: verified inputs, sealed outputs, signed provenance, cached stages."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .._version import __version__
from ..clock import utc_now
from ..config import resolve
from ..crypto.canonical import canonical_json
from ..crypto.digest import ARTIFACT_DIGEST, hash_bytes
from ..data.sources import SourcePolicy, fetch
from ..data.tables import Limits
from ..db.models import ArtifactRow, AttestationRow, DataKeyRow, RunRow, StageRunRow
from ..errors import IntegrityError, SealmlError
from ..pipeline.codecs import CODECS
from ..pipeline.dag import Pipeline, Source
from ..pipeline.execution import QUARANTINE
from ..pipeline.executors import Executor, StageTask, make_executor
from ..pipeline.loader import LoadedPipeline
from ..pipeline.stage import Stage
from ..provenance import intoto
from ..provenance.environment import environment
from ..store.artifacts import ArtifactDraft, SealedArtifact, check_row, unseal, unwrap_key
from .artifacts import ArtifactOperations, resource_of
from .core import WATERMARK_SECRET


@dataclass
class StageOutcome:
    """What happened to one stage in a run."""

    stage: str
    status: str  # "executed" or "cached"
    outputs: dict[str, str]
    attestation: str | None
    seconds: float


@dataclass
class RunReport:
    """The result of a run: every stage's outcome and the final artifacts by name."""

    run_id: str
    pipeline: str
    executor: str
    stages: list[StageOutcome] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "pipeline": self.pipeline,
            "executor": self.executor,
            "stages": [vars(s) for s in self.stages],
            "artifacts": self.artifacts,
        }


class QuarantineError(IntegrityError):
    """A stage refused its input; its outputs are sealed as quarantined; the run stopped."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digests(row: ArtifactRow, data: bytes) -> dict[str, str]:
    algorithm, _, value = row.digest.partition(":")
    return {"sha256": _sha256(data), algorithm: value}


def cache_key(stage: Stage, code: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """Content address of a stage execution: its code (the pipeline file and the sealml
    version, which holds the built-in stages), parameters and input digests."""
    return _sha256(
        canonical_json(
            {
                "stage": stage.name,
                "code": code,
                "sealml": __version__,
                "params": dict(params),
                "inputs": dict(inputs),
            }
        )
    )


class RunOperations(ArtifactOperations):
    """``sealml run``: the runner, plus provenance verification of what it produced."""

    # -- inputs ---------------------------------------------------------------------------

    def source_policy(self) -> SourcePolicy:
        """Where sources may come from, per ``[data]`` in sealml.toml."""
        section = self.config.data
        return SourcePolicy(
            allowed=tuple(section.allowed_sources),
            ca_bundle=resolve(self.root, section.ca_bundle) if section.ca_bundle else None,
            timeout_seconds=section.timeout_seconds,
            limits=Limits(section.max_bytes, section.max_line_bytes),
        )

    def _seal_source(self, pipeline: Pipeline, name: str, source: Source, base: Path) -> str:
        """Fetch a source (checking allowlist and pin), then seal it, or reuse the artifact
        already holding exactly these bytes."""
        fetched = fetch(
            source.resolved(base), self.source_policy(), sha256=source.sha256, query=source.query
        )
        artifact_name = f"{pipeline.name}/{name}"
        digest = f"{ARTIFACT_DIGEST}:{hash_bytes(fetched.data, ARTIFACT_DIGEST)}"
        with self.db.read() as session:
            existing = session.execute(
                select(ArtifactRow.id).where(
                    ArtifactRow.name == artifact_name,
                    ArtifactRow.digest == digest,
                    ArtifactRow.shredded_at.is_(None),
                )
            ).first()
        if existing is not None:
            return str(existing[0])
        kind = CODECS[source.kind].artifact_kind
        notes = {
            "source": fetched.location,
            "sha256": fetched.sha256,
            "fetched_at": fetched.fetched_at,
        }
        return self.put(io.BytesIO(fetched.data), kind, artifact_name, annotations=notes).id

    def _read_verified(self, session: Session, row: ArtifactRow) -> bytes:
        """An input's plaintext, after its signature, provenance and digest all verified."""
        check_row(row, self._creator_key(session, row))
        self.authorize(f"{row.kind}:read", resource_of(row), action="stage.input")
        return self._plaintext_attested(session, row)

    def _plaintext_attested(self, session: Session, row: ArtifactRow) -> bytes:
        """An artifact's plaintext after its signature, ledger record, digest and (when it
        has one) provenance attestation verified; authorisation is the caller's concern."""
        check_row(row, self._creator_key(session, row))
        self._check_ledger_put(session, row)
        dek = unwrap_key(row, session.get(DataKeyRow, row.id), self.keys)
        sink = io.BytesIO()
        unseal(row, dek, self.blobs, sink)
        data = sink.getvalue()
        attestation = session.get(AttestationRow, row.id)
        if attestation is not None:
            self._check_attestation(session, row, _digests(row, data), attestation.attestation_id)
        return data

    def _attestation_statement(
        self, session: Session, attestation_id: str
    ) -> tuple[dict[str, Any], ArtifactRow]:
        """Open an attestation artifact and verify its envelope; the signer must be the
        principal who sealed the attestation."""
        row = session.get(ArtifactRow, attestation_id)
        if row is None or row.kind != "attestation":
            raise IntegrityError(f"attestation {attestation_id} is missing")
        creator = self._creator_key(session, row)
        check_row(row, creator)
        dek = unwrap_key(row, session.get(DataKeyRow, row.id), self.keys)
        sink = io.BytesIO()
        unseal(row, dek, self.blobs, sink)
        try:
            document, _ = intoto.open_statement(sink.getvalue(), {creator.fingerprint(): creator})
        except intoto.ProvenanceError as error:
            raise IntegrityError(f"attestation {attestation_id}: {error}") from None
        return document, row

    def _check_attestation(
        self, session: Session, row: ArtifactRow, expected: dict[str, str], attestation_id: str
    ) -> dict[str, Any]:
        """Check that the attestation covers *row* with exactly the *expected* digests;
        returns its statement."""
        document, attestation = self._attestation_statement(session, attestation_id)
        if attestation.creator != row.creator:
            raise IntegrityError(
                f"artifact {row.id}: attested by {attestation.creator!r} "
                f"but sealed by {row.creator!r}"
            )
        for subject in intoto.subjects(document):
            if subject.artifact_id == row.id:
                if subject.digests != expected:
                    raise IntegrityError(f"artifact {row.id}: provenance subject digest differs")
                return document
        raise IntegrityError(f"artifact {row.id}: not a subject of its attestation")

    def stage_secrets(self, stage: Stage) -> dict[str, Any]:
        """The workspace secrets a stage declared, as its keyword arguments."""
        secrets: dict[str, Any] = {}
        if "pii" in stage.secrets:
            pseudonym_key, token_key = self.pii_keys()
            secrets["pii_keys"] = {"pseudonym": pseudonym_key.hex(), "token": token_key.hex()}
        if "watermark" in stage.secrets:
            secrets["watermark_key"] = self.named_secret(WATERMARK_SECRET).hex()
        return secrets

    # -- the cache ------------------------------------------------------------------------

    def _cached_outputs(
        self,
        session: Session,
        key: str,
        stage: Stage,
        code: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
    ) -> tuple[dict[str, str], str] | None:
        """Outputs of an earlier execution with the same key, if they still verify and
        their signed provenance says they came from exactly these code, parameters and
        inputs."""
        candidates = session.execute(
            select(StageRunRow)
            .where(StageRunRow.cache_key == key, StageRunRow.status == "ok")
            .order_by(StageRunRow.finished_at.desc())
        ).scalars()
        for candidate in candidates:
            outputs: dict[str, str] = json.loads(candidate.outputs)
            rows = [session.get(ArtifactRow, i) for i in outputs.values()]
            if set(outputs) != set(stage.outputs) or candidate.attestation_id is None:
                continue
            if any(r is None or r.shredded_at is not None for r in rows):
                continue
            try:
                document, _ = self._attestation_statement(session, candidate.attestation_id)
                build = document["predicate"]["buildDefinition"]
                code_entry = build["resolvedDependencies"][-1]
                dependencies = {
                    d.name: d.digests.get(ARTIFACT_DIGEST) for d in intoto.dependencies(document)
                }
                if (
                    build["externalParameters"]["parameters"]
                    != json.loads(canonical_json(dict(params)))
                    or code_entry["digest"].get("sha256") != code
                    or dependencies != dict(inputs)
                ):
                    continue
            except (IntegrityError, KeyError, TypeError, IndexError):
                continue
            return outputs, candidate.attestation_id
        return None

    # -- the runner -----------------------------------------------------------------------

    def run_pipeline(
        self,
        loaded: LoadedPipeline,
        executor: Executor | str = "local",
        params: Mapping[str, Any] | None = None,
        *,
        on_stage: Callable[[str, StageOutcome | None], None] | None = None,
    ) -> RunReport:
        """Run *loaded*: check the DAG, then for each stage check permission, verify every
        input, execute (or reuse a cached execution), seal every output and a signed
        provenance attestation in one transaction. A failed stage leaves no outputs.
        *on_stage*, if given, is called with each stage's name before it runs (outcome
        None) and after (its outcome), for progress displays."""
        pipeline = loaded.pipeline
        overrides = dict(params or {})
        actor = self.authorize("pipeline:run", f"pipeline:{pipeline.name}", action="run.start")
        stages = pipeline.check(overrides)
        owned = isinstance(executor, str)
        if isinstance(executor, str):
            runner: Executor = make_executor(executor, self.config.pipeline.ray_address)
        else:
            runner = executor
        report = RunReport(uuid.uuid4().hex, pipeline.name, runner.name)
        with self.transaction() as session:
            session.add(
                RunRow(
                    id=report.run_id,
                    pipeline=pipeline.name,
                    executor=runner.name,
                    principal=actor.name,
                    params=json.dumps(overrides, sort_keys=True, default=str),
                    started_at=utc_now(),
                    status="running",
                )
            )
            self.append(
                session,
                [
                    self.event(
                        "run.start",
                        f"run:{report.run_id}",
                        pipeline=pipeline.name,
                        executor=runner.name,
                    )
                ],
            )
        status = "failed"
        try:
            available: dict[str, str] = {}
            for name, source in pipeline.sources.items():
                available[name] = self._seal_source(pipeline, name, source, loaded.path.parent)
            with self.db.read() as session:
                for name, ref in pipeline.artifacts.items():
                    available[name] = self._find(session, ref).id
            for item in stages:
                if on_stage is not None:
                    on_stage(item.name, None)
                outcome = self._run_stage(loaded, item, runner, available, overrides, report.run_id)
                if on_stage is not None:
                    on_stage(item.name, outcome)
                report.stages.append(outcome)
                available.update(outcome.outputs)
            report.artifacts = {name: available[name] for s in stages for name in s.outputs}
            status = "ok"
            return report
        except SealmlError as error:
            self.record([self.event("run.end", f"run:{report.run_id}", "failed", error=str(error))])
            raise
        finally:
            with self.db.write() as session:
                run = session.get(RunRow, report.run_id)
                if run is not None:
                    run.status, run.finished_at = status, utc_now()
            if status == "ok":
                self.record(
                    [self.event("run.end", f"run:{report.run_id}", stages=len(report.stages))]
                )
            if owned:
                runner.close()

    def _run_stage(
        self,
        loaded: LoadedPipeline,
        stage: Stage,
        runner: Executor,
        available: Mapping[str, str],
        overrides: Mapping[str, Any],
        run_id: str,
    ) -> StageOutcome:
        pipeline = loaded.pipeline
        resource = f"stage:{pipeline.name}/{stage.name}"
        actor = self.authorize(stage.permission, resource, action="stage.run")
        values = pipeline.parameters_for(stage, overrides)
        clock = time.perf_counter()
        with self.db.read() as session:
            rows = {n: self._find(session, available[n]) for n in stage.inputs}
            digests = {n: row.digest.partition(":")[2] for n, row in rows.items()}
            key = cache_key(stage, loaded.code_sha256, values, digests)
            cached = self._cached_outputs(session, key, stage, loaded.code_sha256, values, digests)
            if cached is None:
                inputs = {n: self._read_verified(session, row) for n, row in rows.items()}
        if cached is not None:
            reused, attested_by = cached
            self.record([self.event("stage.cached", resource, run=run_id, cache_key=key)])
            seconds = time.perf_counter() - clock
            return StageOutcome(stage.name, "cached", reused, attested_by, seconds)
        started = utc_now()
        try:
            threads = self.config.pipeline.threads or os.cpu_count() or 1
            secrets = self.stage_secrets(stage)
            produced = runner.run(StageTask(loaded.path, stage, inputs, values, threads, secrets))
        except SealmlError as error:
            self.record([self.event("stage.run", resource, "failed", run=run_id, error=str(error))])
            raise
        finished = utc_now()
        verdict = produced.pop(QUARANTINE, None)
        quarantine = verdict.decode("utf-8", "replace") if verdict is not None else None
        sealed: dict[str, SealedArtifact] = {}
        attestation: SealedArtifact | None = None
        try:
            for name, data in produced.items():
                codec = CODECS[stage.outputs[name]]
                self.authorize(f"{codec.artifact_kind}:write", resource, action="stage.output")
                notes = {"pipeline": pipeline.name, "stage": stage.name, "run": run_id}
                if quarantine is not None:
                    notes["quarantined"] = quarantine
                draft = ArtifactDraft(
                    codec.artifact_kind,
                    f"{pipeline.name}/{name}",
                    codec.media_type,
                    tuple(row.id for row in rows.values()),
                    notes,
                )
                sealed[name] = self.seal_draft(io.BytesIO(data), draft)
            provenance = intoto.StageProvenance(
                pipeline=pipeline.name,
                stage=stage.name,
                parameters=json.loads(canonical_json(values)),
                outputs=[
                    intoto.Material(
                        name, _digests(sealed[name].artifact, data), sealed[name].artifact.id
                    )
                    for name, data in produced.items()
                ],
                inputs=[
                    intoto.Material(name, _digests(rows[name], inputs[name]), rows[name].id)
                    for name in stage.inputs
                ],
                code=intoto.Material(
                    "code",
                    {"sha256": loaded.code_sha256},
                    uri=f"{loaded.path.as_uri()}#{stage.name}",
                ),
                executor=runner.name,
                principal=actor.name,
                run_id=run_id,
                started=started,
                finished=finished,
                environment={**environment(), "threads": threads},
            )
            envelope = intoto.sign_statement(intoto.statement(provenance), actor.signing_key)
            attestation = self.seal_draft(
                io.BytesIO(envelope),
                ArtifactDraft(
                    "attestation",
                    f"{pipeline.name}/{stage.name}.intoto.jsonl",
                    intoto.PAYLOAD_TYPE,
                    (),
                    {"pipeline": pipeline.name, "stage": stage.name, "run": run_id},
                ),
            )
            with self.transaction() as session:
                for item in sealed.values():
                    self.commit_sealed(session, item)
                self.commit_sealed(session, attestation)
                for item in sealed.values():
                    session.add(
                        AttestationRow(
                            subject_id=item.artifact.id, attestation_id=attestation.artifact.id
                        )
                    )
                outputs = {name: item.artifact.id for name, item in sealed.items()}
                session.add(
                    StageRunRow(
                        id=uuid.uuid4().hex,
                        run_id=run_id,
                        stage=stage.name,
                        cache_key=key,
                        status="ok" if quarantine is None else "quarantined",
                        outputs=json.dumps(outputs, sort_keys=True),
                        attestation_id=attestation.artifact.id,
                        started_at=started,
                        finished_at=finished,
                    )
                )
                if quarantine is None:
                    done = self.event(
                        "stage.run", resource, run=run_id, cache_key=key, outputs=outputs
                    )
                else:
                    done = self.event(
                        "stage.quarantined",
                        resource,
                        "failed",
                        run=run_id,
                        outputs=outputs,
                        reason=quarantine,
                    )
                self.append(session, [done])
        except BaseException:
            for item in [*sealed.values(), *([attestation] if attestation else [])]:
                self.blobs.delete(item.artifact.blob_name)
            raise
        if quarantine is not None:
            raise QuarantineError(
                f"stage {stage.name!r} quarantined its outputs ({', '.join(outputs)}): {quarantine}"
            )
        seconds = time.perf_counter() - clock
        return StageOutcome(stage.name, "executed", outputs, attestation.artifact.id, seconds)
