"""Running pipelines: verified inputs, sealed outputs, signed provenance, cached stages."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .._version import __version__
from ..access.principals import Actor
from ..clock import utc_now
from ..config import resolve
from ..crypto.canonical import canonical_json
from ..crypto.digest import ARTIFACT_DIGEST, hash_bytes
from ..data.sources import SourcePolicy, fetch
from ..data.tables import Limits
from ..db.models import ArtifactRow, AttestationRow, DataKeyRow, RunRow, StageRunRow
from ..errors import IntegrityError, SealmlError
from ..ledger import EventDraft
from ..pipeline import codecs
from ..pipeline.background import OrderedWriter
from ..pipeline.codecs import CODECS
from ..pipeline.dag import Source
from ..pipeline.execution import (
    QUARANTINE,
    StageResult,
    call_stage,
    decode_inputs,
    encode_outputs,
    private_copy,
)
from ..pipeline.executors import Executor, LocalExecutor, StageTask, make_executor
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
        stored input, execute (or reuse a cached execution), seal every output and a
        signed provenance attestation in one transaction. A failed stage leaves no outputs;
        the stages before it stay committed, so a re-run resumes after them.

        Sealing runs on a background thread while the next stage computes (in submission
        order; see :mod:`sealml.pipeline.background`). On the local executor a stage gets
        the objects its producers returned in this run (private copies) rather than
        decoding their sealed bytes again: they never left this process.

        *on_stage*, if given, is called with each stage's name before it runs (outcome
        None) and after (its outcome), for progress displays."""
        pipeline = loaded.pipeline
        overrides = dict(params or {})
        actor = self.authorize("pipeline:run", f"pipeline:{pipeline.name}", action="run.start")
        stages = pipeline.check(overrides)
        _ = self.keys  # unlock here: the background thread seals with it
        owned = isinstance(executor, str)
        if isinstance(executor, str):
            runner: Executor = make_executor(executor, self.config.pipeline.ray_address)
        else:
            runner = executor
        run = _Run(
            report=RunReport(uuid.uuid4().hex, pipeline.name, runner.name),
            loaded=loaded,
            executor=runner,
            overrides=overrides,
            writer=OrderedWriter("sealml-seal"),
        )
        run.writer.submit(lambda: self._record_run_start(run, actor.name))
        try:
            for name, source in pipeline.sources.items():
                self._add_source(run, name, source)
            with self.db.read() as session:
                for name, ref in pipeline.artifacts.items():
                    run.available[name] = _Stored(self._find(session, ref).id)
            for item in stages:
                run.writer.raise_failure()
                if on_stage is not None:
                    on_stage(item.name, None)
                outcome = self._run_stage(run, item)
                if on_stage is not None:
                    on_stage(item.name, outcome)
            run.writer.drain()
            report = run.report
            report.stages = [future.result() for future in run.outcomes]
            report.artifacts = {name: run.output_id(name) for s in stages for name in s.outputs}
            run.writer.submit(lambda: self._record_run_end(run, "ok"))
            run.writer.drain()
            return report
        except SealmlError as error:
            self._fail_run(run, str(error))
            raise
        except BaseException:
            self._fail_run(run, "interrupted")
            raise
        finally:
            run.writer.close()
            if owned:
                runner.close()

    def _record_run_start(self, run: _Run, principal: str) -> None:
        report = run.report
        with self.db.write() as session:
            session.add(
                RunRow(
                    id=report.run_id,
                    pipeline=report.pipeline,
                    executor=report.executor,
                    principal=principal,
                    params=json.dumps(run.overrides, sort_keys=True, default=str),
                    started_at=utc_now(),
                    status="running",
                )
            )
            event = self.event(
                "run.start",
                f"run:{report.run_id}",
                pipeline=report.pipeline,
                executor=report.executor,
            )
            self.append(session, [event])

    def _record_run_end(self, run: _Run, status: str, error: str | None = None) -> None:
        details: dict[str, Any] = {"error": error} if error else {"stages": len(run.outcomes)}
        with self.transaction() as session:
            row = session.get(RunRow, run.report.run_id)
            if row is not None:
                row.status, row.finished_at = status, utc_now()
            outcome = "ok" if status == "ok" else "failed"
            self.append(
                session, [self.event("run.end", f"run:{run.report.run_id}", outcome, **details)]
            )

    def _fail_run(self, run: _Run, error: str) -> None:
        """Let the stages already computed finish sealing (so a re-run resumes after
        them), then record the failed stage and the run's end."""
        with contextlib.suppress(BaseException):
            run.writer.drain()
        if run.failure is not None:
            self.record([run.failure])
        self._record_run_end(run, "failed", error)

    def _add_source(self, run: _Run, name: str, source: Source) -> None:
        """Fetch a source (checking allowlist and pin); reuse the artifact already holding
        exactly these bytes, or seal them in the background (and hand them over as they
        are)."""
        pipeline = run.loaded.pipeline
        fetched = fetch(
            source.resolved(run.loaded.path.parent),
            self.source_policy(),
            sha256=source.sha256,
            query=source.query,
        )
        artifact_name = f"{pipeline.name}/{name}"
        digest = hash_bytes(fetched.data, ARTIFACT_DIGEST)
        with self.db.read() as session:
            existing = session.execute(
                select(ArtifactRow.id).where(
                    ArtifactRow.name == artifact_name,
                    ArtifactRow.digest == f"{ARTIFACT_DIGEST}:{digest}",
                    ArtifactRow.shredded_at.is_(None),
                )
            ).first()
        if existing is not None:  # read and verified like any stored input when used
            run.available[name] = _Stored(str(existing[0]))
            return
        digests = {"sha256": fetched.sha256, ARTIFACT_DIGEST: digest}
        notes = {
            "source": fetched.location,
            "sha256": fetched.sha256,
            "fetched_at": fetched.fetched_at,
        }
        kind = CODECS[source.kind].artifact_kind

        def seal_source() -> dict[str, _Made]:
            info = self.put(io.BytesIO(fetched.data), kind, artifact_name, annotations=notes)
            return {name: _Made(info.id, digests, fetched.data)}

        run.available[name] = _Pending(run.writer.submit(seal_source), name)

    def _stored_input(self, artifact_id: str) -> _Made:
        """A stored input after its signature, ledger record, digest and provenance all
        verified, with the digests provenance names it by."""
        with self.db.read() as session:
            row = self._find(session, artifact_id)
            self.authorize(f"{row.kind}:read", resource_of(row), action="stage.input")
            data = self._plaintext_attested(session, row)
            return _Made(row.id, _digests(row, data), data)

    @staticmethod
    def _local_arguments(
        run: _Run, stage: Stage, refs: Mapping[str, _Ref], made: Mapping[str, _Made]
    ) -> dict[str, Any]:
        """A local stage's arguments: private copies of what earlier stages of this run
        returned, and decoded verified bytes for everything else."""
        arguments: dict[str, Any] = {}
        for name, ref in refs.items():
            if name in run.memory:
                arguments[name] = private_copy(run.memory[name])
            else:
                data = made[name].data if name in made else run.made(ref).data
                arguments.update(decode_inputs(stage, {name: data or b""}))
        return arguments

    def _run_stage(self, run: _Run, stage: Stage) -> StageOutcome:
        """Run or reuse one stage; its sealing is queued on the run's writer."""
        pipeline = run.loaded.pipeline
        resource = f"stage:{pipeline.name}/{stage.name}"
        actor = self.authorize(stage.permission, resource, action="stage.run")
        for kind in set(stage.outputs.values()):
            self.authorize(f"{CODECS[kind].artifact_kind}:write", resource, action="stage.output")
        values = pipeline.parameters_for(stage, run.overrides)
        clock = time.perf_counter()
        refs = {n: run.available[n] for n in stage.inputs}
        committed = {n: r.artifact_id for n, r in refs.items() if not isinstance(r, _Pending)}
        if len(committed) == len(refs):
            cached = self._cached_stage(run, stage, values, committed)
            if cached is not None:
                return cached
        stored = {n: ref for n, ref in refs.items() if isinstance(ref, _Stored)}
        made = {n: self._stored_input(ref.artifact_id) for n, ref in stored.items()}
        threads = self.config.pipeline.threads or os.cpu_count() or 1
        secrets = self.stage_secrets(stage)
        started = utc_now()
        encoded: dict[str, bytes] | None = None
        try:
            if isinstance(run.executor, LocalExecutor):
                arguments = self._local_arguments(run, stage, refs, made)
                result = call_stage(stage, arguments, values, threads, secrets)
                for name, value in result.values.items():
                    codecs.check(
                        stage.outputs[name], value, f"stage {stage.name!r} output {name!r}"
                    )
                run.memory.update(result.values)
            else:
                inputs = {
                    n: (made[n] if n in made else run.made(ref)).data or b""
                    for n, ref in refs.items()
                }
                task = StageTask(run.loaded.path, stage, inputs, values, threads, secrets)
                encoded = run.executor.run(task)
                verdict = encoded.pop(QUARANTINE, None)
                result = StageResult({}, verdict.decode("utf-8", "replace") if verdict else None)
        except SealmlError as error:
            run.failure = self.event(
                "stage.run", resource, "failed", run=run.report.run_id, error=str(error)
            )
            raise
        finished = utc_now()
        seconds = time.perf_counter() - clock
        job = _StageJob(
            stage, actor, values, refs, made, result, encoded, threads, started, finished, seconds
        )
        future = run.writer.submit(lambda: self._commit_stage(run, job))
        run.outcomes.append(_outcome_of(future))
        pending = _outputs_of(future)
        for name in stage.outputs:
            run.available[name] = _Pending(pending, name)
        if result.quarantine is not None:
            run.writer.drain()
            flagged = future.result().outcome.outputs
            raise QuarantineError(
                f"stage {stage.name!r} quarantined its outputs ({', '.join(flagged)}): "
                f"{result.quarantine}"
            )
        return StageOutcome(stage.name, "executed", {}, None, seconds)

    def _cached_stage(
        self, run: _Run, stage: Stage, values: Mapping[str, Any], inputs: Mapping[str, str]
    ) -> StageOutcome | None:
        """The outcome of reusing an earlier execution with the same key, if one verifies;
        *inputs* are the ids of committed artifacts."""
        clock = time.perf_counter()
        code = run.loaded.code_sha256
        with self.db.read() as session:
            rows = {n: self._find(session, artifact_id) for n, artifact_id in inputs.items()}
            digests = {n: row.digest.partition(":")[2] for n, row in rows.items()}
            key = cache_key(stage, code, values, digests)
            cached = self._cached_outputs(session, key, stage, code, values, digests)
        if cached is None:
            return None
        reused, attested_by = cached
        resource = f"stage:{run.loaded.pipeline.name}/{stage.name}"
        event = self.event("stage.cached", resource, run=run.report.run_id, cache_key=key)
        run.writer.submit(lambda: self.record([event]))
        for name, artifact_id in reused.items():
            run.available[name] = _Stored(artifact_id)
        outcome = StageOutcome(
            stage.name, "cached", reused, attested_by, time.perf_counter() - clock
        )
        run.outcomes.append(_done(outcome))
        return outcome

    def _commit_stage(self, run: _Run, job: _StageJob) -> _Committed:
        """Seal a stage's outputs and its signed provenance in one transaction (on the
        run's background writer)."""
        stage, pipeline = job.stage, run.loaded.pipeline
        inputs = {name: job.made.get(name) or run.made(ref) for name, ref in job.refs.items()}
        produced = job.encoded
        if produced is None:
            produced = encode_outputs(stage, StageResult(job.result.values))
        key = cache_key(
            stage,
            run.loaded.code_sha256,
            job.values,
            {n: made.digests[ARTIFACT_DIGEST] for n, made in inputs.items()},
        )
        quarantine = job.result.quarantine
        resource = f"stage:{pipeline.name}/{stage.name}"
        sealed: dict[str, SealedArtifact] = {}
        attestation: SealedArtifact | None = None
        try:
            for name, data in produced.items():
                codec = CODECS[stage.outputs[name]]
                notes = {"pipeline": pipeline.name, "stage": stage.name, "run": run.report.run_id}
                if quarantine is not None:
                    notes["quarantined"] = quarantine
                draft = ArtifactDraft(
                    codec.artifact_kind,
                    f"{pipeline.name}/{name}",
                    codec.media_type,
                    tuple(made.artifact_id for made in inputs.values()),
                    notes,
                )
                sealed[name] = self.seal_draft(io.BytesIO(data), draft)
            made = {
                name: _Made(sealed[name].artifact.id, _digests(sealed[name].artifact, data), data)
                for name, data in produced.items()
            }
            provenance = intoto.StageProvenance(
                pipeline=pipeline.name,
                stage=stage.name,
                parameters=json.loads(canonical_json(job.values)),
                outputs=[
                    intoto.Material(name, item.digests, item.artifact_id)
                    for name, item in made.items()
                ],
                inputs=[
                    intoto.Material(name, inputs[name].digests, inputs[name].artifact_id)
                    for name in stage.inputs
                ],
                code=intoto.Material(
                    "code",
                    {"sha256": run.loaded.code_sha256},
                    uri=f"{run.loaded.path.as_uri()}#{stage.name}",
                ),
                executor=run.executor.name,
                principal=job.actor.name,
                run_id=run.report.run_id,
                started=job.started,
                finished=job.finished,
                environment={**environment(), "threads": job.threads},
            )
            envelope = intoto.sign_statement(intoto.statement(provenance), job.actor.signing_key)
            attestation = self.seal_draft(
                io.BytesIO(envelope),
                ArtifactDraft(
                    "attestation",
                    f"{pipeline.name}/{stage.name}.intoto.jsonl",
                    intoto.PAYLOAD_TYPE,
                    (),
                    {"pipeline": pipeline.name, "stage": stage.name, "run": run.report.run_id},
                ),
            )
            outputs = {name: item.artifact.id for name, item in sealed.items()}
            if quarantine is None:
                done = self.event(
                    "stage.run", resource, run=run.report.run_id, cache_key=key, outputs=outputs
                )
            else:
                done = self.event(
                    "stage.quarantined",
                    resource,
                    "failed",
                    run=run.report.run_id,
                    outputs=outputs,
                    reason=quarantine,
                )
            # The witness advances once, when the run ends (not after every stage).
            with self.db.write() as session:
                self.commit_sealed(session, *sealed.values(), attestation, then=[done])
                for item in sealed.values():
                    session.add(
                        AttestationRow(
                            subject_id=item.artifact.id, attestation_id=attestation.artifact.id
                        )
                    )
                session.add(
                    StageRunRow(
                        id=uuid.uuid4().hex,
                        run_id=run.report.run_id,
                        stage=stage.name,
                        cache_key=key,
                        status="ok" if quarantine is None else "quarantined",
                        outputs=json.dumps(outputs, sort_keys=True),
                        attestation_id=attestation.artifact.id,
                        started_at=job.started,
                        finished_at=job.finished,
                    )
                )
        except BaseException:
            for item in [*sealed.values(), *([attestation] if attestation else [])]:
                self.blobs.delete(item.artifact.blob_name)
            raise
        outcome = StageOutcome(
            stage.name, "executed", outputs, attestation.artifact.id, job.seconds
        )
        return _Committed(outcome, made)


@dataclass(frozen=True)
class _Stored:
    """An input stored before it is needed: read and verified when a stage executes."""

    artifact_id: str


@dataclass(frozen=True)
class _Made:
    """An artifact with the digests provenance names it by and its plaintext."""

    artifact_id: str
    digests: dict[str, str]
    data: bytes | None

    def __repr__(self) -> str:
        return f"_Made({self.artifact_id})"


@dataclass(frozen=True)
class _Committed:
    """A committed stage: its outcome and its outputs."""

    outcome: StageOutcome
    outputs: dict[str, _Made]


@dataclass(frozen=True)
class _Pending:
    """An output of this run, sealed (or being sealed) by the run's background writer."""

    outputs: Future[dict[str, _Made]]
    name: str


_Ref = _Stored | _Made | _Pending


@dataclass(frozen=True)
class _StageJob:
    """Everything the background writer needs to seal one executed stage."""

    stage: Stage
    actor: Actor
    values: Mapping[str, Any]
    refs: Mapping[str, _Ref]
    made: Mapping[str, _Made]
    result: StageResult
    encoded: dict[str, bytes] | None
    threads: int
    started: str
    finished: str
    seconds: float


@dataclass
class _Run:
    """The state of one run."""

    report: RunReport
    loaded: LoadedPipeline
    executor: Executor
    overrides: dict[str, Any]
    writer: OrderedWriter
    available: dict[str, _Ref] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Future[StageOutcome]] = field(default_factory=list)
    failure: EventDraft | None = None

    def made(self, ref: _Ref) -> _Made:
        """An input with its plaintext (waiting for the writer when it is still sealing)."""
        if isinstance(ref, _Made):
            return ref
        if isinstance(ref, _Pending):
            return ref.outputs.result()[ref.name]
        raise TypeError("a stored input is read by the runner")

    def output_id(self, name: str) -> str:
        ref = self.available[name]
        return ref.artifact_id if isinstance(ref, _Stored | _Made) else self.made(ref).artifact_id


def _outcome_of(future: Future[_Committed]) -> Future[StageOutcome]:
    outcome: Future[StageOutcome] = Future()
    future.add_done_callback(lambda f: _settle(outcome, f, lambda c: c.outcome))
    return outcome


def _outputs_of(future: Future[_Committed]) -> Future[dict[str, _Made]]:
    outputs: Future[dict[str, _Made]] = Future()
    future.add_done_callback(lambda f: _settle(outputs, f, lambda c: c.outputs))
    return outputs


def _settle(
    target: Future[Any], source: Future[_Committed], pick: Callable[[_Committed], Any]
) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(pick(source.result()))


def _done(outcome: StageOutcome) -> Future[StageOutcome]:
    future: Future[StageOutcome] = Future()
    future.set_result(outcome)
    return future
