"""Running pipelines: verified inputs, sealed outputs, signed provenance, cached stages."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .._version import __version__
from ..access.principals import Actor
from ..clock import utc_now
from ..config import resolve
from ..crypto.canonical import canonical_json
from ..crypto.digest import ARTIFACT_DIGEST, hash_bytes
from ..crypto.secret import Secret
from ..crypto.signing import Signer, SigningKey
from ..data.sources import Fetched, SourcePolicy, fetch
from ..data.tables import Limits
from ..db.models import ArtifactRow, AttestationRow, DataKeyRow, RunRow, StageRunRow
from ..db.raw import execute, insert_rows
from ..errors import AuthenticationError, IntegrityError, SealmlError
from ..ledger import EventDraft
from ..pipeline import codecs
from ..pipeline.background import Channel, InlineWriter, ProcessWriter, ThreadWriter, Writer
from ..pipeline.codecs import CODECS
from ..pipeline.dag import Source
from ..pipeline.execution import (
    LOG,
    QUARANTINE,
    StageFailedError,
    StageResult,
    call_stage,
    decode_inputs,
    encode_outputs,
    private_copy,
)
from ..pipeline.executors import (
    Executor,
    LocalExecutor,
    StageTask,
    make_executor,
    refuse_unenforceable,
)
from ..pipeline.loader import LoadedPipeline
from ..pipeline.stage import Stage, StageLimits
from ..provenance import intoto
from ..provenance.environment import environment
from ..store.artifacts import ArtifactDraft, SealedArtifact, unseal, unwrap_key
from ..witness import STATE_ENV, state_home
from .artifacts import ArtifactOperations, resource_of
from .core import WATERMARK_SECRET
from .once import once


@dataclass
class StageOutcome:
    """What happened to one stage in a run."""

    stage: str
    status: str  # "executed" or "cached"
    outputs: dict[str, str]
    attestation: str | None
    seconds: float
    log: str | None = None  # the sealed text the stage printed and logged, if any


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


_RUN_ENDED = "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?"
_SAME_SOURCE = (
    "SELECT id FROM artifacts WHERE name = ? AND digest = ? AND shredded_at IS NULL LIMIT 1"
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Sha256Sink:
    def __init__(self) -> None:
        self.hasher = hashlib.sha256()

    def write(self, data: memoryview, /) -> int:
        self.hasher.update(data)
        return len(data)


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
        return once(self, "plaintext", (row.id, row.digest), lambda: self._attested(session, row))

    def _attested(self, session: Session, row: ArtifactRow) -> bytes:
        self._check_signed(session, row)
        self._check_ledger_put(session, row)
        data = self._unsealed(session, row)
        # remembered, so a provenance walk in the same operation does not decrypt it again
        digests = once(self, "digests", (row.id, row.digest), lambda: _digests(row, data))
        attestation = session.get(AttestationRow, row.id)
        if attestation is not None:
            self._check_attestation(session, row, digests, attestation.attestation_id)
        return data

    def _content_digests(self, session: Session, row: ArtifactRow) -> dict[str, str]:
        """SHA-256 and the artifact digest, recomputed from the sealed content (streamed:
        nothing is held in memory)."""
        return once(self, "digests", (row.id, row.digest), lambda: self._recomputed(session, row))

    def _recomputed(self, session: Session, row: ArtifactRow) -> dict[str, str]:
        sink = _Sha256Sink()
        unseal(row, unwrap_key(row, session.get(DataKeyRow, row.id), self.keys), self.blobs, sink)
        algorithm, _, value = row.digest.partition(":")
        return {"sha256": sink.hasher.hexdigest(), algorithm: value}

    def _unsealed(self, session: Session, row: ArtifactRow) -> bytes:
        """A checked row's content, decrypted and authenticated segment by segment."""
        dek = unwrap_key(row, session.get(DataKeyRow, row.id), self.keys)
        sink = io.BytesIO()
        unseal(row, dek, self.blobs, sink)
        return sink.getvalue()

    def _attestation_statement(
        self, session: Session, attestation_id: str
    ) -> tuple[dict[str, Any], ArtifactRow]:
        """Open an attestation artifact and verify its envelope; the signer must be the
        principal who sealed the attestation."""
        return once(
            self,
            "attestation",
            attestation_id,
            lambda: self._open_attestation(session, attestation_id),
        )

    def _open_attestation(
        self, session: Session, attestation_id: str
    ) -> tuple[dict[str, Any], ArtifactRow]:
        row = session.get(ArtifactRow, attestation_id)
        if row is None or row.kind != "attestation":
            raise IntegrityError(f"attestation {attestation_id} is missing")
        creator = self._check_signed(session, row)
        try:
            document, _ = intoto.open_statement(self._unsealed(session, row), creator.keyring())
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
                subjects = intoto.subjects(document)
                digests = {row.id: row.digest for row in rows if row is not None}
                if (
                    build["externalParameters"]["parameters"]
                    != json.loads(canonical_json(dict(params)))
                    or code_entry["digest"].get("sha256") != code
                    or dependencies != dict(inputs)
                    # the outputs the cache row names must be the ones attested, digest and
                    # all: an edited row could otherwise hand back another artifact
                    or {subject.name: subject.artifact_id for subject in subjects} != outputs
                    or any(
                        f"{ARTIFACT_DIGEST}:{subject.digests.get(ARTIFACT_DIGEST)}"
                        != digests.get(str(subject.artifact_id))
                        for subject in subjects
                    )
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

        Sealing happens in order on the run's writer (see :meth:`_writer`), beside the
        next stage where that pays. On the
        local executor a stage gets private copies of the objects its producers returned
        in this run rather than decoding their sealed bytes again: they never left this
        process.

        *on_stage*, if given, is called with each stage's name before it runs (outcome
        None) and after (its outcome), for progress displays."""
        pipeline = loaded.pipeline
        overrides = dict(params or {})
        actor = self.authorize("pipeline:run", f"pipeline:{pipeline.name}", action="run.start")
        stages = pipeline.check(overrides)
        refuse_unenforceable(executor if isinstance(executor, str) else executor.name, stages)
        _ = self.keys  # unlocked before the writer starts: it seals with these keys
        owned = isinstance(executor, str)
        if isinstance(executor, str):
            runner: Executor = make_executor(executor, self.config.pipeline.ray_address)
        else:
            runner = executor
        report = RunReport(uuid.uuid4().hex, pipeline.name, runner.name)
        spec = _PipelineSpec.of(loaded)
        writer = self._writer(report.run_id, spec, runner, actor)
        run = _Run(report, loaded, runner, overrides, writer)
        run.consumers.update(name for item in stages for name in item.inputs)
        params_json = json.dumps(overrides, sort_keys=True, default=str)
        writer.call("run_start", actor.name, params_json)
        try:
            for name, source in pipeline.sources.items():
                self._add_source(run, name, source)
            if pipeline.artifacts:
                with self.db.read() as session:
                    for name, ref in pipeline.artifacts.items():
                        run.available[name] = _Stored(self._find(session, ref).id)
            for item in stages:
                writer.raise_failure()
                if on_stage is not None:
                    on_stage(item.name, None)
                outcome = self._run_stage(run, item, last=item is stages[-1])
                if on_stage is not None:
                    on_stage(item.name, outcome)
            if not run.ended:  # queued behind the last commit (skipped if any commit fails)
                writer.call("run_end", "ok", None, len(run.outcomes))
            writer.drain()
            report.stages = [run.outcome(entry) for entry in run.outcomes]
            report.artifacts = {name: run.output_id(name) for s in stages for name in s.outputs}
            return report
        except SealmlError as error:
            self._fail_run(run, str(error))
            raise
        except BaseException:
            self._fail_run(run, "interrupted")
            raise
        finally:
            if isinstance(writer, Channel):
                writer.post("finish")
            writer.close()
            if owned:
                runner.close()
            if isinstance(writer, InlineWriter) and isinstance(runner, LocalExecutor):
                _INLINE_LOCAL_RUNS.append(report.run_id)
                if len(_INLINE_LOCAL_RUNS) >= 2:
                    start_sealing_process()

    def _writer(self, run_id: str, spec: _PipelineSpec, runner: Executor, actor: Actor) -> Writer:
        """Where the run seals. Stages of the other executors run elsewhere: a thread of
        this process seals beside them. Local stages run here, and neither a thread (it
        takes the interpreter lock from the stage code) nor a forked copy (the parent
        then pays a copy-on-write fault per page it touches) can seal beside them, so a
        separate sealing process does, at idle priority (a parallel training loop slows
        down many times over when a competitor takes one of its processors). Starting
        that process costs seconds of imports, worth it only in a process that runs
        pipelines again and again: local runs seal inline until a second one has ended,
        which starts it (after the run, so its imports compete with nothing); a run that
        finds it busy with another run seals inline too."""
        local = isinstance(runner, LocalExecutor)
        if local:
            process = ProcessWriter.ready(_SealingService, idle=True)
            channel = process.open() if process is not None else None
            if channel is not None:
                channel.call(
                    "begin",
                    _RunSpec(
                        self.root,
                        str(state_home()),
                        run_id,
                        spec,
                        runner.name,
                        actor.name,
                        actor.via,
                        # a key in the token stays there: the process finds it itself
                        key.pkcs8_der()
                        if isinstance(key := actor.signing_key, SigningKey)
                        else b"",
                        self.keystore.session_key,
                        self.token_pin.reveal() if self.token_pin is not None else None,
                    ),
                )
                return channel
        _Sealer.warm()
        # Only consumers on other executors need the sealed bytes back.
        sealer = _Sealer(self, run_id, spec, runner.name, keep_data=not local)
        return InlineWriter(sealer) if local else ThreadWriter(sealer)

    def _fail_run(self, run: _Run, error: str) -> None:
        """Let the stages already computed finish sealing (so a re-run resumes after
        them), then record the failed stage and the run's end."""
        with contextlib.suppress(BaseException):
            run.writer.drain()
        if run.failure is not None:
            failure = run.failure
            if run.failed_log is not None:
                log = self._seal_failed_log(run, *run.failed_log)
                if log is not None:
                    failure = dataclasses.replace(failure, details={**failure.details, "log": log})
            self.record([failure])
        spec = _PipelineSpec.of(run.loaded)
        _Sealer(self, run.report.run_id, spec, run.executor.name, False).run_end(
            "failed", error, len(run.outcomes)
        )

    def _seal_failed_log(self, run: _Run, stage: str, text: str) -> str | None:
        """Seal what a failed stage printed and logged (its id), if the principal may
        write reports; the failure is recorded either way."""
        pipeline = run.loaded.pipeline.name
        notes = {"pipeline": pipeline, "stage": stage, "run": run.report.run_id,
                 "log": "failed-stage"}  # fmt: skip
        try:
            info = self.put(io.BytesIO(text.encode("utf-8")), "report", f"{pipeline}/{stage}.log",
                            media_type="text/plain", annotations=notes)  # fmt: skip
        except SealmlError:
            return None
        return info.id

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
            existing = execute(
                session, _SAME_SOURCE, (artifact_name, f"{ARTIFACT_DIGEST}:{digest}")
            )
        if existing:  # read and verified like any stored input when used
            run.available[name] = _Stored(str(existing[0][0]))
            return
        kind = CODECS[source.kind].artifact_kind
        # the writer records the SHA-256 (computed here only to check a pin)
        future = run.writer.call("seal_source", name, kind, artifact_name, fetched, digest)
        run.available[name] = _Pending(future, name)
        run.fetched[name] = fetched.data

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
        """A local stage's arguments: what earlier stages of this run returned, and
        decoded verified bytes for everything else.

        A stage gets a private copy of an earlier stage's output, so what it changes
        reaches neither the sealing (which may still be reading the object) nor the other
        consumers; the last consumer gets the object itself once the writer no longer
        reads it."""
        arguments: dict[str, Any] = {}
        for name, ref in refs.items():
            if name in run.memory:
                run.consumers[name] -= 1
                value = run.memory[name]
                if run.consumers[name] == 0 and not _borrowed(run, ref):
                    arguments[name] = value
                    del run.memory[name]
                else:
                    arguments[name] = private_copy(value)
            else:
                arguments.update(decode_inputs(stage, {name: run.data(name, ref, made)}))
        return arguments

    def _run_stage(self, run: _Run, stage: Stage, last: bool = False) -> StageOutcome:
        """Run or reuse one stage; its sealing is queued on the run's writer. The commit
        of an executed *last* stage also records the run's successful end."""
        pipeline = run.loaded.pipeline
        resource = f"stage:{pipeline.name}/{stage.name}"
        self.authorize(stage.permission, resource, action="stage.run")
        for kind in set(stage.outputs.values()):
            self.authorize(f"{CODECS[kind].artifact_kind}:write", resource, action="stage.output")
        values = pipeline.parameters_for(stage, run.overrides)
        clock = time.perf_counter()
        refs = {n: run.available[n] for n in stage.inputs}
        committed = {n: r.artifact_id for n, r in refs.items() if isinstance(r, _Stored)}
        if len(committed) == len(refs):
            cached = self._cached_stage(run, stage, values, committed)
            if cached is not None:
                return cached
        made = {
            n: self._stored_input(ref.artifact_id)
            for n, ref in refs.items()
            if isinstance(ref, _Stored)
        }
        threads = self.config.pipeline.threads or os.cpu_count() or 1
        secrets = self.stage_secrets(stage)
        started = utc_now()
        encoded: dict[str, bytes] | None = None
        try:
            if isinstance(run.executor, LocalExecutor):
                arguments = self._local_arguments(run, stage, refs, made)
                result = call_stage(stage, arguments, values, threads, secrets)
                log = result.log.encode("utf-8")
                for name, value in result.values.items():
                    where = f"stage {stage.name!r} output {name!r}"
                    codecs.check(stage.outputs[name], value, where)
                run.memory.update(result.values)
            else:
                inputs = {n: run.data(n, ref, made) for n, ref in refs.items()}
                defaults = StageLimits(
                    self.config.pipeline.stage_time_limit_seconds,
                    self.config.pipeline.stage_memory_limit_mib,
                )
                task = StageTask(
                    run.loaded.path,
                    stage,
                    inputs,
                    values,
                    threads,
                    secrets,
                    stage.limits | defaults,
                )
                encoded = run.executor.run(task)
                verdict = encoded.pop(QUARANTINE, None)
                log = encoded.pop(LOG, b"")
                result = StageResult({}, verdict.decode("utf-8", "replace") if verdict else None)
        except SealmlError as error:
            run.failure = self.event(
                "stage.run", resource, "failed", run=run.report.run_id, error=str(error)
            )
            if isinstance(error, StageFailedError) and error.log:
                run.failed_log = (stage.name, error.log)
            raise
        seconds = time.perf_counter() - clock
        job = _StageJob(
            stage=stage.name,
            values=dict(values),
            inputs={n: made[n].without_data() if n in made else n for n in refs},
            outputs=result.values if encoded is None else {},
            encoded=encoded,
            quarantine=result.quarantine,
            log=log,
            threads=threads,
            started=started,
            finished=utc_now(),
            seconds=seconds,
            ends_run=len(run.outcomes) + 1 if last and result.quarantine is None else None,
        )
        run.ended = job.ends_run is not None
        future = run.writer.call("commit_stage", job)
        run.outcomes.append(future)
        for name in stage.outputs:
            run.available[name] = _Pending(future, name)
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
        run.writer.call("record", [event])
        for name, artifact_id in reused.items():
            run.available[name] = _Stored(artifact_id)
        seconds = time.perf_counter() - clock
        outcome = StageOutcome(stage.name, "cached", reused, attested_by, seconds)
        run.outcomes.append(outcome)
        return outcome


@dataclass(frozen=True)
class _Stored:
    """An input stored before it is needed: read and verified when a stage executes."""

    artifact_id: str


@dataclass(frozen=True)
class _Made:
    """An artifact with the digests provenance names it by, and its plaintext when the
    runner needs it."""

    artifact_id: str
    digests: dict[str, str]
    data: bytes | None = None

    def without_data(self) -> _Made:
        return _Made(self.artifact_id, self.digests)

    def __repr__(self) -> str:
        return f"_Made({self.artifact_id})"


@dataclass(frozen=True)
class _Committed:
    """A sealed stage: its outcome and its outputs."""

    outcome: StageOutcome
    outputs: dict[str, _Made]


@dataclass(frozen=True)
class _Pending:
    """An output of this run that the writer seals (or has sealed)."""

    committed: Future[Any]  # of _Committed, or of a source's {name: _Made}
    name: str


_Ref = _Stored | _Pending


@dataclass(frozen=True)
class _StageJob:
    """What the writer needs to seal one executed stage (it crosses to the writer's
    process, so: names rather than objects with code, and no keys)."""

    stage: str
    values: dict[str, Any]
    inputs: dict[str, _Made | str]  # a stored input, or the name of an output of this run
    outputs: dict[str, Any]  # objects to encode (local executor) ...
    encoded: dict[str, bytes] | None  # ... or the bytes the executor returned
    quarantine: str | None
    log: bytes  # what the stage printed and logged (empty when nothing)
    threads: int
    started: str
    finished: str
    seconds: float
    ends_run: int | None = None  # the run's stage count, when this commit also ends the run


@dataclass
class _Run:
    """The state of one run, on the runner's side."""

    report: RunReport
    loaded: LoadedPipeline
    executor: Executor
    overrides: dict[str, Any]
    writer: Writer
    ended: bool = False  # the last stage's commit records the run's end
    available: dict[str, _Ref] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    consumers: Counter[str] = field(default_factory=Counter)  # stages still to read each
    fetched: dict[str, bytes] = field(default_factory=dict)
    outcomes: list[Future[Any] | StageOutcome] = field(default_factory=list)
    failure: EventDraft | None = None
    failed_log: tuple[str, str] | None = None  # (stage, what it printed before failing)

    def made(self, ref: _Ref) -> _Made:
        """An output of this run (waiting for the writer when it is still sealing)."""
        if isinstance(ref, _Stored):
            raise TypeError("a stored input is read by the runner")
        committed = ref.committed.result()
        outputs = committed.outputs if isinstance(committed, _Committed) else committed
        made: _Made = outputs[ref.name]
        return made

    def data(self, name: str, ref: _Ref, stored: Mapping[str, _Made]) -> bytes:
        """An input's plaintext: read from the store (*stored*), fetched as a source, or
        sealed earlier in this run (waiting for the writer)."""
        if name in stored:
            return stored[name].data or b""
        if name in self.fetched:
            return self.fetched[name]
        return self.made(ref).data or b""

    def output_id(self, name: str) -> str:
        ref = self.available[name]
        return ref.artifact_id if isinstance(ref, _Stored) else self.made(ref).artifact_id

    @staticmethod
    def outcome(entry: Future[Any] | StageOutcome) -> StageOutcome:
        if isinstance(entry, StageOutcome):
            return entry
        committed: _Committed = entry.result()
        return committed.outcome


class _Sealer:
    """The writer's side of a run: seals sources and stage outputs with signed
    provenance, and records the run, in the order the runner asks."""

    def __init__(
        self,
        workspace: RunOperations,
        run_id: str,
        pipeline: _PipelineSpec,
        executor: str,
        keep_data: bool,
    ) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.pipeline = pipeline
        self.executor = executor
        self.keep_data = keep_data
        self.outputs: dict[str, _Made] = {}

    @staticmethod
    def warm() -> None:
        """Load, once per process, what sealing needs: the skops writer imports every
        estimator, provenance lists every installed package."""
        import pyarrow.parquet  # noqa: F401
        import skops.io  # noqa: F401

        environment()

    def _kept(self, made: _Made) -> _Made:
        return made if self.keep_data else made.without_data()

    def run_start(self, principal: str, params_json: str) -> None:
        pipeline = self.pipeline
        ws = self.workspace
        with ws.db.write() as session:
            row = RunRow(
                id=self.run_id,
                pipeline=pipeline.name,
                executor=self.executor,
                principal=principal,
                params=params_json,
                started_at=utc_now(),
                finished_at=None,
                status="running",
            )
            insert_rows(session, [row])
            event = ws.event(
                "run.start", f"run:{self.run_id}", pipeline=pipeline.name, executor=self.executor
            )
            ws.append(session, [event])

    def run_end(self, status: str, error: str | None, stages: int) -> None:
        ws = self.workspace
        with ws.transaction() as session:
            ws.append(session, [self._ended(session, status, error, stages)])

    def _ended(self, session: Session, status: str, error: str | None, stages: int) -> EventDraft:
        """Mark the run ended in *session*; the event that records it."""
        ws = self.workspace
        execute(session, _RUN_ENDED, (status, utc_now(), self.run_id))
        details: dict[str, Any] = {"error": error} if error else {"stages": stages}
        outcome = "ok" if status == "ok" else "failed"
        return ws.event("run.end", f"run:{self.run_id}", outcome, **details)

    def record(self, drafts: list[EventDraft]) -> None:
        self.workspace.record(drafts)

    def seal_source(
        self,
        name: str,
        kind: str,
        artifact_name: str,
        fetched: Fetched,
        digest: str,
    ) -> dict[str, _Made]:
        """Seal a fetched source, recording where it came from, when, and its SHA-256."""
        notes = {
            "source": fetched.location,
            "sha256": fetched.sha256,
            "fetched_at": fetched.fetched_at,
        }
        data = fetched.data
        info = self.workspace.put(io.BytesIO(data), kind, artifact_name, annotations=notes)
        digests = {"sha256": fetched.sha256, ARTIFACT_DIGEST: digest}
        self.outputs[name] = _Made(info.id, digests, data)
        return {name: self._kept(self.outputs[name])}

    def commit_stage(self, job: _StageJob) -> _Committed:
        """Seal a stage's outputs and its signed provenance in one transaction."""
        ws, pipeline = self.workspace, self.pipeline
        stage = pipeline.stage(job.stage)
        actor = ws.require_actor()
        inputs = {
            name: ref if isinstance(ref, _Made) else self.outputs[ref]
            for name, ref in job.inputs.items()
        }
        produced = job.encoded
        if produced is None:
            produced = encode_outputs(stage, StageResult(job.outputs))
        key = cache_key(
            stage,
            pipeline.code_sha256,
            job.values,
            {n: made.digests[ARTIFACT_DIGEST] for n, made in inputs.items()},
        )
        resource = f"stage:{pipeline.name}/{stage.name}"
        notes = {"pipeline": pipeline.name, "stage": stage.name, "run": self.run_id}
        sealed: dict[str, SealedArtifact] = {}
        attestation: SealedArtifact | None = None
        log: SealedArtifact | None = None
        try:
            for name, data in produced.items():
                codec = CODECS[stage.outputs[name]]
                parents = tuple(made.artifact_id for made in inputs.values())
                flagged = {**notes, "quarantined": job.quarantine} if job.quarantine else notes
                draft = ArtifactDraft(
                    codec.artifact_kind,
                    f"{pipeline.name}/{name}",
                    codec.media_type,
                    parents,
                    flagged,
                )
                sealed[name] = ws.seal_draft(io.BytesIO(data), draft)
            made = {
                name: _Made(sealed[name].artifact.id, _digests(sealed[name].artifact, data), data)
                for name, data in produced.items()
            }
            provenance = intoto.StageProvenance(
                pipeline=pipeline.name,
                stage=stage.name,
                parameters=json.loads(canonical_json(job.values)),
                outputs=[intoto.Material(n, m.digests, m.artifact_id) for n, m in made.items()],
                inputs=[
                    intoto.Material(name, inputs[name].digests, inputs[name].artifact_id)
                    for name in stage.inputs
                ],
                code=intoto.Material(
                    "code",
                    {"sha256": pipeline.code_sha256},
                    uri=f"{pipeline.path.as_uri()}#{stage.name}",
                ),
                executor=self.executor,
                principal=actor.name,
                run_id=self.run_id,
                started=job.started,
                finished=job.finished,
                environment={**environment(), "threads": job.threads},
            )
            envelope = intoto.sign_statement(intoto.statement(provenance), actor.signing_key)
            attestation = ws.seal_draft(
                io.BytesIO(envelope),
                ArtifactDraft(
                    "attestation",
                    f"{pipeline.name}/{stage.name}.intoto.jsonl",
                    intoto.PAYLOAD_TYPE,
                    (),
                    notes,
                ),
            )
            log = None
            if job.log:
                # Sealed beside the outputs, not among them: nothing downstream reads it, and
                # it is not a subject of the provenance (it names the attestation instead).
                marks = {**notes, "log": "stage", "attestation": attestation.artifact.id}
                draft = ArtifactDraft(
                    "report", f"{pipeline.name}/{stage.name}.log", "text/plain", (), marks
                )
                log = ws.seal_draft(io.BytesIO(job.log), draft)
            outputs = {name: item.artifact.id for name, item in sealed.items()}
            if job.quarantine is None:
                done = ws.event(
                    "stage.run", resource, run=self.run_id, cache_key=key, outputs=outputs
                )
            else:
                done = ws.event(
                    "stage.quarantined",
                    resource,
                    "failed",
                    run=self.run_id,
                    outputs=outputs,
                    reason=job.quarantine,
                )
            # The witness advances once, when the run ends (not after every stage); the last
            # stage's commit records the run's end too, saving a transaction at the end.
            with ws.db.write() as session:
                then = [done]
                if job.ends_run is not None:
                    then.append(self._ended(session, "ok", None, job.ends_run))
                kept = [attestation, *([log] if log else [])]
                ws.commit_sealed(session, *sealed.values(), *kept, then=then)
                attested = attestation.artifact.id
                insert_rows(
                    session,
                    [
                        AttestationRow(subject_id=s.artifact.id, attestation_id=attested)
                        for s in sealed.values()
                    ],
                )
                insert_rows(
                    session,
                    [
                        StageRunRow(
                            id=uuid.uuid4().hex,
                            run_id=self.run_id,
                            stage=stage.name,
                            cache_key=key,
                            status="ok" if job.quarantine is None else "quarantined",
                            outputs=json.dumps(outputs, sort_keys=True),
                            attestation_id=attested,
                            started_at=job.started,
                            finished_at=job.finished,
                        )
                    ],
                )
        except BaseException:
            for item in [*sealed.values(), *([attestation] if attestation else []),
                         *([log] if log else [])]:  # fmt: skip
                ws.blobs.delete(item.artifact.blob_name)
            raise
        if job.ends_run is not None:
            ws.advance_witness()
        self.outputs.update(made)
        outcome = StageOutcome(
            stage.name, "executed", outputs, attestation.artifact.id, job.seconds,
            log.artifact.id if log else None,
        )  # fmt: skip
        return _Committed(outcome, {n: self._kept(m) for n, m in made.items()})


_INLINE_LOCAL_RUNS: list[str] = []
"""Local runs of this process that sealed inline (see ``RunOperations._writer``)."""


def start_sealing_process() -> ProcessWriter:
    """The process's sealing process for local runs, started now if it is not running."""
    return ProcessWriter.shared(_SealingService, idle=True)


def _not_called(**_: Any) -> dict[str, Any]:
    raise AssertionError("the sealing side never calls a stage")


def _borrowed(run: _Run, ref: _Ref) -> bool:
    """Whether the run's writer may still read the object behind *ref*."""
    return isinstance(ref, _Pending) and run.writer.borrows(ref.committed)


@dataclass(frozen=True)
class _PipelineSpec:
    """What sealing needs to know of a pipeline (it crosses to the sealing process:
    no stage code)."""

    name: str
    path: Path
    code_sha256: str
    stages: dict[str, tuple[dict[str, str], dict[str, str]]]

    @classmethod
    def of(cls, loaded: LoadedPipeline) -> _PipelineSpec:
        pipeline = loaded.pipeline
        stages = {s.name: (dict(s.inputs), dict(s.outputs)) for s in pipeline.stages}
        return cls(pipeline.name, loaded.path, loaded.code_sha256, stages)

    def stage(self, name: str) -> Stage:
        inputs, outputs = self.stages[name]
        return Stage(name, _not_called, dict(inputs), dict(outputs))


@dataclass(frozen=True)
class _RunSpec:
    """What the sealing process needs to act for one run: the workspace, the acting
    principal with its key, the keystore's key and any HSM token's PIN (they cross a
    private pipe to our own child process, never a disk)."""

    root: Path
    state_dir: str
    run_id: str
    pipeline: _PipelineSpec
    executor: str
    principal: str
    via: str
    signing_key: bytes  # PKCS#8, or empty: the principal's key is in the token
    keystore_key: bytes
    token_pin: bytes | None

    def __repr__(self) -> str:
        return f"_RunSpec({self.run_id}, {self.principal}, ***)"


class _SealingService:
    """The sealing process's side: one run at a time, a freshly opened workspace each."""

    def __init__(self) -> None:
        _Sealer.warm()
        self._sealer: _Sealer | None = None

    def begin(self, spec: _RunSpec) -> None:
        from . import Workspace

        self.finish()
        os.environ[STATE_ENV] = spec.state_dir
        workspace = Workspace.open(spec.root)
        try:
            if spec.token_pin is not None:  # first: unlocking may need the token's signing key
                workspace.use_token_pin(Secret(spec.token_pin))
            workspace.unlock_with_key(spec.keystore_key)
            with workspace.db.read() as session:
                if spec.signing_key:
                    key: Signer | None = SigningKey.from_pkcs8(spec.signing_key)
                else:
                    key = workspace.token_key_of(workspace.principals.get(session, spec.principal))
                if key is None:
                    raise AuthenticationError(f"the token holds no current key of {spec.principal}")
                workspace.actor = workspace.principals.authenticate_key(
                    session, spec.principal, key, spec.via
                )
        except BaseException:
            workspace.close()
            raise
        workspace.witness_deferred = True
        self._sealer = _Sealer(workspace, spec.run_id, spec.pipeline, spec.executor, False)

    def finish(self) -> None:
        """End the run: advance the witness once (the runner does not wait for this),
        close the workspace."""
        if self._sealer is not None:
            workspace = self._sealer.workspace
            self._sealer = None
            try:
                # Best effort, like every advance: a later one covers a missed one.
                with contextlib.suppress(Exception):
                    workspace.advance_deferred_witness()
            finally:
                workspace.close()

    close = finish  # when the runner's process ends

    def _current(self) -> _Sealer:
        if self._sealer is None:
            raise IntegrityError("the sealing process has no run")
        return self._sealer

    def __getattr__(self, method: str) -> Any:
        """The run's sealer answers every other call the runner makes."""
        if method not in _SEALER_CALLS:
            raise AttributeError(method)
        return getattr(self._current(), method)


_SEALER_CALLS = frozenset({"run_start", "run_end", "record", "seal_source", "commit_stage"})
