"""The model registry: immutable signed versions, aliases that move by promotion and
rollback, two-person approvals confirmed by TOTP, revocation, and verified loading.

The ledger is the source of truth: where an alias points and which versions are revoked is
replayed from ``model.*`` events, and the tables (a fast index) must agree with it.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..clock import utc_now
from ..config import RegistrySection
from ..db.models import (
    ArtifactRow,
    AttestationRow,
    ModelAliasMoveRow,
    ModelApprovalRow,
    ModelVersionRow,
    TotpRow,
)
from ..errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from ..ledger import EventFilter, Ledger
from ..ledger.merkle import leaf_hash
from ..models import openssf
from ..models.formats import load_model
from ..models.manifest import Manifest, Resource
from ..models.registry import (
    OWN_REPORTS,
    SBOM_REPORT,
    SIGNATURE_ANNOTATION,
    GateCheck,
    RegistryState,
    VersionFacts,
    check_alias,
    check_model_name,
    evaluation_required,
    gate_checks,
    model_resource,
    replay,
    vulnerability_gate,
)
from ..models.scanner import scan_bytes
from ..provenance.advisories import AdvisoryDatabase, Finding
from ..provenance.environment import environment
from ..provenance.intoto import dependencies
from ..store.artifacts import ArtifactDraft, SealedArtifact, info_of
from .lineage import ProvenanceStep
from .modelfiles import ModelFileOperations
from .once import verifies_once
from .totp import TotpOperations

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@dataclass(frozen=True)
class ModelVersion(VersionFacts):
    """A registered version as the registry reports it: its signed facts and its state."""

    status: str = "active"
    aliases: tuple[str, ...] = ()
    status_reason: str | None = None
    # (time, findings) of its newest `sealml model vulnerabilities` check, if any
    vulnerability_check: tuple[str, tuple[str, ...]] | None = None

    def to_dict(self) -> dict[str, Any]:
        checked = self.vulnerability_check
        return {
            **vars(self),
            "aliases": list(self.aliases),
            "vulnerability_check": (
                {"at": checked[0], "findings": list(checked[1])} if checked else None
            ),
        }


def _statement_facts(row: ModelVersionRow) -> VersionFacts:
    """The facts a version row's statement states (its signature is checked elsewhere)."""
    try:
        return VersionFacts.from_statement(json.loads(row.statement))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"model {row.name} v{row.version}: statement malformed") from None


def _metrics(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    inner = body.get("metrics")
    return inner if isinstance(inner, dict) else body


class RegistryOperations(ModelFileOperations, TotpOperations):
    """``sealml model register|approve|promote|rollback|revoke|ls|show|history`` and
    verified loading of registered versions."""

    # -- rules in force -------------------------------------------------------------------

    @property
    def registry_rules(self) -> RegistrySection:
        """The registry rules in force."""
        return self.in_force.registry

    # -- registration ---------------------------------------------------------------------

    @verifies_once
    def register_model(self, ref: str, name: str, *, evaluation: str | None = None) -> ModelVersion:
        """Register a sealed model artifact as the next immutable version of *name*.

        The model is verified, scanned (a clean verdict is required), signed in the OpenSSF
        format by the registrant, and bound to its provenance and evaluation report in a
        statement the registrant signs; all of it commits with one ledger event.
        """
        check_model_name(name)
        actor = self.authorize("registry:register", model_resource(name), action="model.register")
        self.authorize("report:write", model_resource(name), action="model.register")
        self.authorize("attestation:write", model_resource(name), action="model.register")
        with self.db.read() as session:
            row = self._find(session, ref)
            if row.kind != "model":
                raise UsageError(f"{ref} is a {row.kind}, not a model")
            self.authorize("model:read", f"artifact:{row.id}", action="model.register")
            data = self._plaintext_attested(session, row)
            provenance_id = self._provenance_of(session, row)
            evaluation_id = self._evaluation_of(session, row, evaluation)
            built_in = self._build_environment(session, row, provenance_id)
        result = scan_bytes(data, row.name)
        if result.verdict != "safe":
            self.record(
                [
                    self.event(
                        "model.register", model_resource(name), "denied", verdict=result.verdict
                    )
                ]
            )
            raise IntegrityError(
                f"{row.name} is {result.verdict}; only clean models are registered"
            )
        sha256 = hashlib.sha256(data).hexdigest()
        manifest = Manifest((Resource(".", sha256),), ())
        bundle = openssf.sign_manifest(manifest, row.name, actor.signing_key)
        scan = self._seal_scan_report(row, result)
        sbom = self._seal_sbom(row, name, sha256, built_in)
        signature = self.seal_draft(
            io.BytesIO(bundle),
            ArtifactDraft(
                "attestation",
                f"{row.name}.sig",
                BUNDLE_MEDIA_TYPE,
                (row.id,),
                {"signature": SIGNATURE_ANNOTATION},
            ),
        )
        try:
            with self.transaction() as session:
                version = 1 + (
                    session.execute(
                        select(func.max(ModelVersionRow.version)).where(
                            ModelVersionRow.name == name
                        )
                    ).scalar_one_or_none()
                    or 0
                )
                facts = VersionFacts(
                    name=name,
                    version=version,
                    artifact_id=row.id,
                    artifact_digest=row.digest,
                    signature_id=signature.artifact.id,
                    scan_id=scan.artifact.id,
                    provenance_id=provenance_id,
                    evaluation_id=evaluation_id,
                    trained_by=row.creator,
                    registered_by=actor.name,
                    registered_at=utc_now(),
                    sbom_id=sbom.artifact.id,
                )
                self.commit_sealed(session, scan, signature, sbom)
                statement = facts.statement()
                (seq,) = self.append(
                    session,
                    [
                        self.event(
                            "model.register",
                            model_resource(name),
                            version=version,
                            artifact=row.id,
                            statement_sha256=hashlib.sha256(statement).hexdigest(),
                        )
                    ],
                )
                session.add(
                    ModelVersionRow(
                        id=uuid.uuid4().hex,
                        **{k: v for k, v in vars(facts).items() if k != "artifact_digest"},
                        statement=statement,
                        signature=actor.signing_key.sign(statement),
                        ledger_seq=seq,
                        status="active",
                    )
                )
        except BaseException:
            for sealed in (scan, signature, sbom):
                self.blobs.delete(sealed.artifact.blob_name)
            raise
        return self.show_model(name, version)

    def _check_sbom(self, session: Session, sbom_id: str, sha256: str, where: str) -> bytes:
        """The SBOM's verified content, which must describe the model with *sha256*."""
        from ..provenance.sbom import model_sha256  # cyclonedx costs every command 0.2 s

        sbom = session.get(ArtifactRow, sbom_id)
        if sbom is None:
            raise IntegrityError(f"{where}: its SBOM is missing")
        document = self._plaintext_attested(session, sbom)
        if model_sha256(document) != sha256:
            raise IntegrityError(f"{where}: its SBOM describes another model")
        return document

    def _build_environment(
        self, session: Session, row: ArtifactRow, provenance_id: str | None
    ) -> tuple[dict[str, Any], str]:
        """The packages the model was built with, as its training stage's signed provenance
        records them; for a model without provenance, those of this process."""
        if provenance_id is not None:
            recorded = self._provenance_chain(session, row.id)[0].environment
            if recorded.get("packages"):
                return recorded, f"provenance {provenance_id}"
        return environment(), "registering process"

    def _seal_sbom(
        self, row: ArtifactRow, name: str, sha256: str, built_in: tuple[dict[str, Any], str]
    ) -> SealedArtifact:
        from ..provenance import sbom  # cyclonedx costs every command 0.2 s

        recorded, source = built_in
        subject = sbom.SbomSubject(name, row.id, sha256, source)
        document = sbom.environment_sbom(subject, recorded)
        draft = ArtifactDraft(
            "report",
            f"{row.name}.cdx.json",
            sbom.MEDIA_TYPE,
            (row.id,),
            {"report": SBOM_REPORT, "packages": str(len(recorded.get("packages") or {}))},
        )
        return self.seal_draft(io.BytesIO(document), draft)

    def _provenance_of(self, session: Session, row: ArtifactRow) -> str | None:
        link = session.get(AttestationRow, row.id)
        if link is None:
            return None
        self._provenance_chain(session, row.id)
        return link.attestation_id

    def _evaluation_of(self, session: Session, row: ArtifactRow, ref: str | None) -> str | None:
        """The evaluation report: the one given, else the newest JSON report made from the
        model (as a pipeline's evaluate stage makes it)."""
        report: ArtifactRow | None
        if ref is not None:
            report = self._find(session, ref)
            if report.kind != "report":
                raise UsageError(f"{ref} is a {report.kind}, not a report")
        else:
            report = next(
                (
                    r
                    for r in self._children(session, row.id, "report")
                    if r.media_type == "application/json"
                    and info_of(r).annotations.get("report") not in OWN_REPORTS
                ),
                None,
            )
            if report is None:
                return None
        self._plaintext_attested(session, report)
        return report.id

    # -- reading the registry -------------------------------------------------------------

    def _state(self, session: Session, name: str) -> RegistryState:
        """The model's state replayed from the ledger (event bodies checked against their
        leaf hashes; the tree itself is checked by ``sealml audit verify``)."""
        events = []
        for event in Ledger.events(
            session, EventFilter(resource=model_resource(name), action="model.*")
        ):
            if leaf_hash(event.body) != event.leaf_hash:
                raise IntegrityError(f"ledger event {event.seq} was altered")
            events.append(event.fields())
        return replay(events)

    def _aliases_of(self, state: RegistryState, version: int) -> tuple[str, ...]:
        return tuple(sorted(a for a in state.aliases if state.current(a) == version))

    def _version_row(self, session: Session, name: str, version: int) -> ModelVersionRow:
        row = session.execute(
            select(ModelVersionRow).where(
                ModelVersionRow.name == name, ModelVersionRow.version == version
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"model {name} has no version {version}")
        return row

    def _facts(self, session: Session, row: ModelVersionRow, state: RegistryState) -> VersionFacts:
        """The signed facts of a version, checked against the ledger and the table."""
        try:
            signer = self.principals.get(session, row.registered_by)
        except NotFoundError:
            raise IntegrityError(f"model {row.name} v{row.version}: unknown registrant") from None
        if not any(key.verify(row.signature, row.statement) for key in signer.keys):
            raise IntegrityError(f"model {row.name} v{row.version}: statement signature invalid")
        since = signer.compromised_signer(row.signature, row.statement)
        if since is not None and state.registered_at.get(row.version, "") >= since:
            raise IntegrityError(
                f"model {row.name} v{row.version}: registered with a key of "
                f"{row.registered_by} reported compromised since {since}"
            )
        facts = _statement_facts(row)
        columns = {k: getattr(row, k) for k in vars(facts) if k != "artifact_digest"}
        if {k: v for k, v in vars(facts).items() if k != "artifact_digest"} != columns:
            raise IntegrityError(f"model {row.name} v{row.version}: record differs from statement")
        if state.registered.get(row.version) != hashlib.sha256(row.statement).hexdigest():
            raise IntegrityError(f"model {row.name} v{row.version}: not registered in the ledger")
        if state.status.get(row.version) != row.status:
            raise IntegrityError(
                f"model {row.name} v{row.version}: status {row.status!r} differs from the ledger"
            )
        return facts

    def _verified_model(
        self, session: Session, facts: VersionFacts
    ) -> tuple[ArtifactRow, bytes, list[ProvenanceStep]]:
        """The model's artifact, plaintext and provenance chain after all of it verified:
        sealed content, OpenSSF signature by the registrant, clean scan, provenance."""
        where = f"model {facts.name} v{facts.version}"
        row, data = self._model_artifact(session, facts)
        signature = session.get(ArtifactRow, facts.signature_id)
        if signature is None:
            raise IntegrityError(f"{where}: its signature is missing")
        registrant = self.principals.get(session, facts.registered_by)
        bundle = openssf.parse_bundle(self._plaintext_attested(session, signature))
        signed = openssf.signed_manifest(bundle, openssf.hinted_key(bundle, registrant.keys))
        actual = Manifest((Resource(".", hashlib.sha256(data).hexdigest()),), ())
        openssf.compare(signed, actual)
        scan = session.get(ArtifactRow, facts.scan_id)
        if scan is None:
            raise IntegrityError(f"{where}: its scan report is missing")
        report = json.loads(self._plaintext_attested(session, scan))
        if report.get("verdict") != "safe":
            raise IntegrityError(f"{where}: its scan verdict is {report.get('verdict')!r}")
        if facts.sbom_id is not None:
            self._check_sbom(session, facts.sbom_id, actual.resources[0].digest, where)
        if facts.provenance_id is not None:
            link = session.get(AttestationRow, row.id)
            if link is None or link.attestation_id != facts.provenance_id:
                raise IntegrityError(f"{where}: its provenance attestation changed")
            return row, data, self._provenance_chain(session, row.id)
        return row, data, []

    def _model_artifact(self, session: Session, facts: VersionFacts) -> tuple[ArtifactRow, bytes]:
        """The version's model artifact, the one its statement names, and its verified
        plaintext."""
        row = session.get(ArtifactRow, facts.artifact_id)
        if row is None or row.digest != facts.artifact_digest:
            raise IntegrityError(
                f"model {facts.name} v{facts.version}: its model artifact is missing or replaced"
            )
        return row, self._plaintext_attested(session, row)

    def _describe(self, row: ModelVersionRow, state: RegistryState) -> ModelVersion:
        return ModelVersion(
            **vars(_statement_facts(row)),
            status=row.status,
            aliases=self._aliases_of(state, row.version),
            status_reason=row.status_reason,
            vulnerability_check=state.vulnerability_checks.get(row.version),
        )

    def models(self) -> list[ModelVersion]:
        """The latest version of every registered model."""
        self.authorize("registry:read", "model:*", action="model.ls")
        with self.db.read() as session:
            names = session.execute(select(ModelVersionRow.name).distinct()).scalars().all()
            listed = []
            for name in sorted(names):
                state = self._state(session, name)
                latest = session.execute(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.name == name)
                    .order_by(ModelVersionRow.version.desc())
                    .limit(1)
                ).scalar_one()
                listed.append((latest, state))
        return [self._describe(row, state) for row, state in listed]

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of *name*, newest first."""
        check_model_name(name)
        self.authorize("registry:read", model_resource(name), action="model.ls")
        with self.db.read() as session:
            state = self._state(session, name)
            rows = (
                session.execute(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.name == name)
                    .order_by(ModelVersionRow.version.desc())
                )
                .scalars()
                .all()
            )
        if not rows:
            raise NotFoundError(f"no model named {name!r}")
        return [self._describe(row, state) for row in rows]

    def show_model(self, name: str, ref: str | int) -> ModelVersion:
        """One version (by number or alias), its signed record checked against the ledger."""
        check_model_name(name)
        self.authorize("registry:read", model_resource(name), action="model.show")
        with self.db.read() as session:
            state = self._state(session, name)
            row = self._version_row(session, name, self._version_number(state, name, ref))
            self._facts(session, row, state)
        return self._describe(row, state)

    def model_sbom(self, name: str, ref: str | int) -> bytes:
        """The CycloneDX SBOM of a registered version (JSON), after its sealed content,
        its creator's signature and its subject's SHA-256 verified."""
        check_model_name(name)
        self.authorize("registry:read", model_resource(name), action="model.sbom")
        return self._verified_sbom(name, ref)[1]

    def _verified_sbom(self, name: str, ref: str | int) -> tuple[int, bytes]:
        """The version *ref* resolves to and its SBOM, verified (authorisation is the
        caller's)."""
        with self.db.read() as session:
            state = self._state(session, name)
            row = self._version_row(session, name, self._version_number(state, name, ref))
            facts = self._facts(session, row, state)
            where = f"model {name} v{facts.version}"
            if facts.sbom_id is None:
                raise NotFoundError(f"{where} was registered before sealml made SBOMs")
            sha256 = hashlib.sha256(self._model_artifact(session, facts)[1]).hexdigest()
            return facts.version, self._check_sbom(session, facts.sbom_id, sha256, where)

    def model_vulnerabilities(
        self, name: str, ref: str | int, advisories: AdvisoryDatabase
    ) -> list[Finding]:
        """The *advisories* that affect a package the version's model was built with (as
        its verified SBOM lists them); the check, with the advisory copy's digest and
        what it found, is recorded in the ledger."""
        from ..provenance import sbom  # cyclonedx costs every command 0.2 s

        check_model_name(name)
        self.authorize("registry:read", model_resource(name), action="model.vulnerabilities")
        version, document = self._verified_sbom(name, ref)
        packages = sbom.packages_in(document)
        if not packages:
            raise IntegrityError(f"the SBOM of model {name} v{version} lists no packages")
        found = advisories.findings(packages)
        self.record(
            [
                self.event(
                    "model.vulnerabilities",
                    model_resource(name),
                    version=version,
                    model_sha256=sbom.model_sha256(document),
                    advisories_sha256=advisories.sha256,
                    packages=len(packages),
                    findings=sorted({f"{f.package} {f.advisory}" for f in found}),
                )
            ]
        )
        return found

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every registry event of *name*, oldest first (including refusals)."""
        check_model_name(name)
        self.authorize("registry:read", model_resource(name), action="model.history")
        with self.db.read() as session:
            return [
                {"seq": event.seq, **event.fields()}
                for event in Ledger.events(session, EventFilter(resource=model_resource(name)))
            ]

    def _version_number(self, state: RegistryState, name: str, ref: str | int) -> int:
        if isinstance(ref, int):
            return ref
        text = ref.strip().lstrip("v")
        if text.isdigit():
            return int(text)
        current = state.current(check_alias(ref.strip()))
        if current is None:
            raise NotFoundError(f"model {name} has no alias {ref!r}")
        return current

    @verifies_once
    def resolve_model(self, name: str, ref: str | int = "production") -> tuple[ModelVersion, Any]:
        """The model behind ``name@ref``, loaded only after every check passed: signed
        record, ledger state, sealed content, OpenSSF signature, clean scan, provenance.
        Deprecated and revoked versions are refused."""
        check_model_name(name)
        self.authorize("model:read", model_resource(name), action="model.load")
        try:
            with self.db.read() as session:
                state = self._state(session, name)
                number = self._version_number(state, name, ref)
                row = self._version_row(session, name, number)
                facts = self._facts(session, row, state)
                if row.status != "active":
                    raise PermissionDeniedError(
                        f"model {name} v{number} is {row.status} and can never be served"
                    )
                artifact, data, _ = self._verified_model(session, facts)
                model = load_model(data, artifact.media_type, artifact.name)
        except (IntegrityError, PermissionDeniedError) as error:
            self.record(
                [self.event("model.load", model_resource(name), "denied", error=str(error))]
            )
            raise
        self.record([self.event("model.load", model_resource(name), version=number)])
        return self._describe(row, state), model

    # -- changes --------------------------------------------------------------------------

    def approve_model(self, name: str, version: int, alias: str, code: str) -> str:
        """Approve *version* for *alias* as a second principal, confirmed by a TOTP code.
        Returns the approval id (used by the next promotion)."""
        check_model_name(name)
        check_alias(alias)
        actor = self.authorize("registry:approve", model_resource(name), action="model.approve")
        if alias not in self.registry_rules.two_person_aliases:
            raise UsageError(f"alias {alias!r} needs no approval under the registry rules")
        try:
            with self.transaction() as session:
                state = self._state(session, name)
                row = self._version_row(session, name, version)
                self._facts(session, row, state)
                if row.status != "active":
                    raise UsageError(f"model {name} v{version} is {row.status}")
                if actor.name == row.trained_by:
                    raise PermissionDeniedError(
                        f"{actor.name} trained {name} v{version}; another principal must approve"
                    )
                totp_row = session.get(TotpRow, actor.principal.id)
                if totp_row is None:
                    raise AuthenticationError(
                        f"{actor.name} has no TOTP secret; run `sealml user totp-enroll`"
                    )
                self._accept_code(totp_row, code)
                approval_id = uuid.uuid4().hex
                (seq,) = self.append(
                    session,
                    [
                        self.event(
                            "model.approve",
                            model_resource(name),
                            version=version,
                            alias=alias,
                            approval=approval_id,
                        )
                    ],
                )
                session.add(
                    ModelApprovalRow(
                        id=approval_id,
                        name=name,
                        version=version,
                        alias=alias,
                        approver=actor.name,
                        approved_at=utc_now(),
                        ledger_seq=seq,
                    )
                )
        except (AuthenticationError, PermissionDeniedError) as error:
            self.record(
                [
                    self.event(
                        "model.approve",
                        model_resource(name),
                        "denied",
                        version=version,
                        alias=alias,
                        error=str(error),
                    )
                ]
            )
            raise
        return approval_id

    @verifies_once
    def gate_report(self, name: str, version: int, alias: str) -> list[GateCheck]:
        """Every requirement between *version* and *alias*, measured now."""
        check_model_name(name)
        check_alias(alias)
        self.authorize("registry:read", model_resource(name), action="model.gate")
        with self.db.read() as session:
            state = self._state(session, name)
            return self._gate_checks(
                session, state, self._version_row(session, name, version), alias
            )

    def _gate_checks(
        self, session: Session, state: RegistryState, row: ModelVersionRow, alias: str
    ) -> list[GateCheck]:
        facts = self._facts(session, row, state)
        active = row.status == "active"
        checks = [GateCheck("status", "active", row.status, active, f"the version is {row.status}")]
        if not active:
            return checks
        try:
            _, _, steps = self._verified_model(session, facts)
            checks.append(GateCheck("signature, scan, provenance", "verify", "ok", True))
        except IntegrityError as error:
            checks.append(
                GateCheck("signature, scan, provenance", "verify", "failed", False, str(error))
            )
            return checks
        metrics: dict[str, Any] = {}
        evaluated = False
        report = None
        if facts.evaluation_id is not None:
            report = session.get(ArtifactRow, facts.evaluation_id)
            if report is not None:
                found = _metrics(self._plaintext_attested(session, report))
                evaluated = found is not None
                metrics.update(found or {})
        metrics.update(self._pipeline_metrics(session, steps, facts.evaluation_id))
        gate = self.registry_rules.gates.get(alias)
        checks += gate_checks(
            gate,
            has_provenance=facts.provenance_id is not None,
            metrics=metrics,
            has_evaluation=evaluated,
        )
        if (
            gate is not None
            and gate.require_held_out_test
            and evaluation_required(gate)
            and report is not None
        ):
            checks.append(self._held_out_check(session, facts, report, steps))
        if gate is not None and gate.max_vulnerability_check_age_days is not None:
            checks.append(
                vulnerability_gate(
                    state.vulnerability_checks.get(row.version),
                    gate.max_vulnerability_check_age_days,
                )
            )
        if alias in self.registry_rules.two_person_aliases:
            approved = self._open_approval(state, row, alias) is not None
            checks.append(
                GateCheck(
                    "approval", "a second principal, TOTP", "yes" if approved else "none",
                    approved, "no unused approval by a second principal (sealml model approve)",
                )
            )  # fmt: skip
        return checks

    def _held_out_check(
        self,
        session: Session,
        facts: VersionFacts,
        report: ArtifactRow,
        steps: list[ProvenanceStep],
    ) -> GateCheck:
        """Whether the evaluation *report*'s signed provenance shows it ran on this model
        with test data that is not among the model's own inputs (the test set did not
        train it)."""
        name, requirement = "held-out test data", "evaluated this model on data it never saw"

        def refused(measured: str, reason: str) -> GateCheck:
            return GateCheck(name, requirement, measured, False, reason)

        link = session.get(AttestationRow, report.id)
        if link is None:
            return refused("unproven", "the evaluation report has no provenance naming its data")
        document, _ = self._attestation_statement(session, link.attestation_id)
        inputs = {m.name: m.artifact_id for m in dependencies(document)}
        if facts.artifact_id not in inputs.values():
            return refused("another model", "the evaluation report is of another model")
        # The built-in stage names its test input; otherwise every other input counts.
        try:
            named = json.loads(self._plaintext_attested(session, report))["data"]["test"]
        except (ValueError, KeyError, TypeError):
            named = None
        if named is not None and named not in inputs:
            return refused("unproven", f"the evaluation names a test input {named!r} it lacks")
        tests = [inputs[named]] if named is not None else [
            artifact for artifact in inputs.values() if artifact != facts.artifact_id
        ]  # fmt: skip
        if not tests:
            return refused("unproven", "the evaluation's provenance names no test data")
        ancestors = {step.artifact.id for step in steps}
        used = [artifact for artifact in tests if artifact in ancestors]
        if used:
            return refused(
                "used in training", f"the test data ({used[0]}) is among the model's own inputs"
            )
        return GateCheck(name, requirement, "held out", True)

    def _pipeline_metrics(
        self, session: Session, steps: list[ProvenanceStep], evaluation_id: str | None
    ) -> dict[str, float]:
        """Metrics from the reports the model's pipeline made on the way (today: the largest
        share of rows poisoning screening flagged, ``screening.flagged_share``)."""
        shares = [
            float(report["flagged_share"])
            for report in self._sibling_reports(session, steps, evaluation_id).values()
            if isinstance(report, dict) and isinstance(report.get("flagged_share"), int | float)
        ]
        return {"screening.flagged_share": max(shares)} if shares else {}

    def _sibling_reports(
        self, session: Session, steps: list[ProvenanceStep], skip: str | None
    ) -> dict[str, Any]:
        """Reports made by the same stage runs as the model's ancestors (screening, PII,
        validation), by name."""
        found: dict[str, Any] = {}
        for attestation in {s.attestation for s in steps if s.attestation}:
            links = session.execute(
                select(AttestationRow.subject_id).where(
                    AttestationRow.attestation_id == attestation
                )
            ).scalars()
            for subject in links:
                row = session.get(ArtifactRow, subject)
                if row is None or row.kind != "report" or row.id == skip:
                    continue
                try:
                    found[row.name] = json.loads(self._plaintext_attested(session, row))
                except ValueError:
                    continue
        return dict(sorted(found.items()))

    def _gate_failures(
        self, session: Session, state: RegistryState, row: ModelVersionRow, alias: str
    ) -> list[str]:
        return [c.reason for c in self._gate_checks(session, state, row, alias) if not c.passed]

    @staticmethod
    def _open_approval(state: RegistryState, row: ModelVersionRow, alias: str) -> str | None:
        """An unused approval by a second principal, as the ledger records approvals and
        the promotions that used them (the approvals table is only a listing: a row
        inserted there, or marked unused again, approves nothing)."""
        return state.open_approval(row.version, alias, not_by=row.trained_by)

    @verifies_once
    def promote_model(self, name: str, version: int, alias: str) -> ModelVersion:
        """Point *alias* at *version* after the gates and, where the rules say so, a
        second principal's approval (which this promotion uses up)."""
        check_model_name(name)
        check_alias(alias)
        actor = self.authorize("registry:promote", model_resource(name), action="model.promote")
        with self.transaction() as session:
            state = self._state(session, name)
            row = self._version_row(session, name, version)
            if state.current(alias) == version:
                raise UsageError(f"{name}@{alias} already points at v{version}")
            failures = self._gate_failures(session, state, row, alias)
            if not failures:
                approval = self._open_approval(state, row, alias)
                (seq,) = self.append(
                    session,
                    [
                        self.event(
                            "model.promote",
                            model_resource(name),
                            version=version,
                            alias=alias,
                            previous=state.current(alias),
                            approval=approval,
                        )
                    ],
                )
                if approval is not None:
                    listed = session.get(ModelApprovalRow, approval)
                    if listed is not None:
                        listed.used_at = utc_now()
                self._move(session, name, alias, version, "promote", actor.name, seq)
        if failures:
            self.record(
                [
                    self.event(
                        "model.promote",
                        model_resource(name),
                        "denied",
                        version=version,
                        alias=alias,
                        failures=failures,
                    )
                ]
            )
            raise PermissionDeniedError(
                f"{name} v{version} may not become {alias}: " + "; ".join(failures)
            )
        return self.show_model(name, version)

    def _move(
        self, session: Session, name: str, alias: str, version: int, action: str, who: str, seq: int
    ) -> None:
        session.add(
            ModelAliasMoveRow(
                name=name,
                alias=alias,
                version=version,
                action=action,
                principal=who,
                at=utc_now(),
                ledger_seq=seq,
            )
        )

    def rollback_model(self, name: str, alias: str = "production") -> ModelVersion:
        """Move *alias* back to the version it pointed at before its last promotion."""
        check_model_name(name)
        check_alias(alias)
        actor = self.authorize("registry:promote", model_resource(name), action="model.rollback")
        with self.transaction() as session:
            state = self._state(session, name)
            stack = state.aliases.get(alias, [])
            if len(stack) < 2:
                raise UsageError(f"{name}@{alias} has no previous version to roll back to")
            current, previous = stack[-1], stack[-2]
            row = self._version_row(session, name, previous)
            facts = self._facts(session, row, state)
            if row.status != "active":
                raise UsageError(
                    f"cannot roll back {name}@{alias} to v{previous}: it is {row.status}"
                )
            self._verified_model(session, facts)
            (seq,) = self.append(
                session,
                [
                    self.event(
                        "model.rollback",
                        model_resource(name),
                        version=previous,
                        alias=alias,
                        previous=current,
                    )
                ],
            )
            self._move(session, name, alias, previous, "rollback", actor.name, seq)
        return self.show_model(name, previous)

    def set_model_status(self, name: str, version: int, status: str, reason: str) -> ModelVersion:
        """Deprecate or revoke a version; a revoked version can never be served again."""
        check_model_name(name)
        if status not in ("deprecated", "revoked"):
            raise UsageError("status must be deprecated or revoked")
        if not reason.strip():
            raise UsageError("a reason is required")
        self.authorize("registry:revoke", model_resource(name), action=f"model.{status[:-1]}")
        with self.transaction() as session:
            state = self._state(session, name)
            row = self._version_row(session, name, version)
            self._facts(session, row, state)
            if row.status == "revoked" or row.status == status:
                raise UsageError(f"model {name} v{version} is already {row.status}")
            action = "model.revoke" if status == "revoked" else "model.deprecate"
            (seq,) = self.append(
                session,
                [self.event(action, model_resource(name), version=version, reason=reason)],
            )
            row.status, row.status_reason, row.status_seq = status, reason, seq
        return self.show_model(name, version)

    # -- incidents and serving ------------------------------------------------------------

    def freeze_model(
        self, name: str, reason: str, *, frozen: bool = True, on_behalf_of: str | None = None
    ) -> None:
        """Freeze *name* under an incident (every server answers 503 for it) or lift it.

        *on_behalf_of* names the API principal when a server acts for an admin request.
        """
        check_model_name(name)
        if not reason.strip():
            raise UsageError("a reason is required")
        action = "model.freeze" if frozen else "model.unfreeze"
        self.authorize("registry:freeze", model_resource(name), action=action)
        with self.transaction() as session:
            state = self._state(session, name)
            if not state.registered:
                raise NotFoundError(f"no model named {name!r}")
            if (state.frozen is not None) == frozen:
                raise UsageError(f"model {name} is already {'frozen' if frozen else 'not frozen'}")
            details: dict[str, Any] = {"reason": reason}
            if on_behalf_of is not None:
                details["requested_by"] = on_behalf_of
            self.append(session, [self.event(action, model_resource(name), **details)])

    def serving_state(self, name: str, ref: str) -> tuple[int | None, str | None, str | None]:
        """(version *ref* points at, its status, freeze reason) as the ledger tells it: what a
        server polls to follow promotions, rollbacks, revocations and freezes."""
        check_model_name(name)
        with self.db.read() as session:
            state = self._state(session, name)
        try:
            number = self._version_number(state, name, ref)
        except NotFoundError:
            return None, None, state.frozen
        return number, state.status.get(number), state.frozen
