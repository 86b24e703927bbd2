"""What is said about a registered model: its card, and whether a suspect carries its
watermark."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..db.models import ArtifactParentRow, ArtifactRow, AttestationRow
from ..errors import IntegrityError, SealmlError
from ..governance import modelcard
from ..models import watermark
from ..models.formats import load_model
from ..models.registry import PROFILE_REPORT, model_resource
from ..pipeline import codecs
from .core import WATERMARK_SECRET
from .once import verifies_once
from .registry import ModelVersion, RegistryOperations

if TYPE_CHECKING:
    from ..data.profile import Profile

CARD_REPORT = "model-card"
REFERENCE_ROWS = 50_000  # training rows kept (sealed) as the drift reference


class ModelReportOperations(RegistryOperations):
    """``sealml model card`` and ``sealml model watermark-verify``."""

    @verifies_once
    def register_model(self, ref: str, name: str, *, evaluation: str | None = None) -> ModelVersion:
        """Register (see :meth:`RegistryOperations.register_model`), then seal beside the
        model the new version's feature profile (from its training data) and model card."""
        version = super().register_model(ref, name, evaluation=evaluation)
        try:
            self._seal_profile(version)
        except (SealmlError, KeyError, ValueError) as error:
            self.record(
                [self.event("model.profile", model_resource(name), "failed", error=str(error))]
            )
        try:
            facts = self.model_card(name, version.version)
            self.put(
                io.BytesIO(modelcard.markdown(facts).encode("utf-8")),
                "report",
                f"{name}-v{version.version}-card.md",
                media_type="text/markdown",
                parents=[version.artifact_id],
                annotations={"report": CARD_REPORT, "model": f"{name}@{version.version}"},
            )
        except SealmlError as error:
            # The version is registered either way; a missing card is recorded, not fatal.
            self.record(
                [self.event("model.card", model_resource(name), "failed", error=str(error))]
            )
        return version

    def _seal_profile(self, version: ModelVersion) -> None:
        """Profile the dataset the model was made from (the parent holding every model
        input) and seal it as the version's reference; models without named inputs or
        without a training dataset get none."""
        with self.db.read() as session:
            artifact = session.get(ArtifactRow, version.artifact_id)
            assert artifact is not None  # registration verified it
            model = load_model(
                self._plaintext_attested(session, artifact), artifact.media_type, artifact.name
            )
            names = getattr(model, "feature_names_in_", None)
            if names is None:
                return
            inputs = [str(n) for n in names]
            parents = session.execute(
                select(ArtifactRow)
                .join(ArtifactParentRow, ArtifactParentRow.parent_id == ArtifactRow.id)
                .where(ArtifactParentRow.child_id == artifact.id, ArtifactRow.kind == "dataset")
            ).scalars()
            training = None
            for parent in parents:
                frame = codecs.decode("dataset", self._plaintext_attested(session, parent))
                if all(n in frame.columns for n in inputs):
                    training = frame[inputs]
                    break
        if training is None:
            return
        from ..data.profile import profile_frame

        profile = profile_frame(training, inputs)
        self._seal_reference_sample(version, model, training)
        self.put(
            io.BytesIO(json.dumps(profile.to_dict(), sort_keys=True).encode()),
            "report",
            f"{version.name}-v{version.version}-profile.json",
            media_type="application/json",
            parents=[version.artifact_id],
            annotations={"report": PROFILE_REPORT, "model": f"{version.name}@{version.version}"},
        )

    def _seal_reference_sample(self, version: ModelVersion, model: Any, inputs: Any) -> None:
        """A random sample of the training inputs with the model's predictions on them,
        sealed as the version's drift reference (a dataset: it holds training rows)."""
        sample = inputs.sample(
            min(len(inputs), REFERENCE_ROWS), random_state=version.version
        ).reset_index(drop=True)
        sample["prediction"] = model.predict(sample)
        self.put(
            io.BytesIO(codecs.encode("dataset", sample, "reference sample")),
            "dataset",
            f"{version.name}-v{version.version}-reference.parquet",
            media_type=codecs.CODECS["dataset"].media_type,
            parents=[version.artifact_id],
            annotations={"reference": f"{version.name}@{version.version}"},
        )

    @verifies_once
    def model_profile(self, name: str, version: int) -> Profile | None:
        """The sealed feature profile of ``name`` v*version* (verified), if it has one."""
        described = self.show_model(name, version)
        label = f"{name}@{version}"
        with self.db.read() as session:
            row = self._annotated_child(
                session, described.artifact_id, "report", report=PROFILE_REPORT, model=label
            )
            if row is None:
                return None
            try:
                from ..data.profile import Profile

                return Profile.from_dict(json.loads(self._plaintext_attested(session, row)))
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(f"the profile of {label} is malformed") from None

    @verifies_once
    def watermark_verify(
        self,
        name: str,
        ref: str | int = "production",
        *,
        url: str | None = None,
        token: str | None = None,
    ) -> watermark.WatermarkReport:
        """Query our registered model (or, with *url*, a suspect endpoint) with the secret
        trigger set of ``name@ref`` and test the match rate against chance."""
        described, model = self.resolve_model(name, ref)
        spec = watermark.spec_of(model)
        predict = watermark.http_predictor(url, token=token) if url else model.predict
        report = watermark.verify(predict, self.named_secret(WATERMARK_SECRET), spec)
        self.record(
            [
                self.event(
                    "model.watermark-verify",
                    model_resource(name),
                    version=described.version,
                    target=url or "registered model",
                    match_rate=report.match_rate,
                    p_value=report.p_value,
                )
            ]
        )
        return report

    @verifies_once
    def model_card(self, name: str, ref: str | int = "production") -> modelcard.CardFacts:
        """The verified facts behind a version's model card (see ``governance.modelcard``)."""
        described = self.show_model(name, ref)
        self.authorize("model:read", model_resource(name), action="model.card")
        with self.db.read() as session:
            artifact = session.get(ArtifactRow, described.artifact_id)
            assert artifact is not None  # show_model verified it
            steps = self._provenance_chain(session, artifact.id)
            chain = [
                {
                    "id": step.artifact.id,
                    "name": step.artifact.name,
                    "kind": step.artifact.kind,
                    "status": step.status,
                    "signer": step.signer,
                    "creator": step.artifact.creator,
                }
                for step in steps
            ]
            sources = [
                {"id": s.artifact.id, "name": s.artifact.name, **s.artifact.annotations}
                for s in steps
                if s.status == "source"
            ]
            parameters: dict[str, Any] = {}
            link = session.get(AttestationRow, artifact.id)
            if link is not None:
                document, _ = self._attestation_statement(session, link.attestation_id)
                external = document["predicate"]["buildDefinition"]["externalParameters"]
                parameters = dict(external.get("parameters") or {})
            reports = self._sibling_reports(session, steps, described.evaluation_id)
            evaluation = None
            if described.evaluation_id is not None:
                report = session.get(ArtifactRow, described.evaluation_id)
                if report is not None:
                    loaded = json.loads(self._plaintext_attested(session, report))
                    evaluation = loaded if isinstance(loaded, dict) else None
        aliases = sorted(
            set(self.registry_rules.gates) | set(self.registry_rules.two_person_aliases)
        )
        gates = {
            alias: [c.to_dict() for c in self.gate_report(name, described.version, alias)]
            for alias in aliases
        }
        return modelcard.CardFacts(
            name=name,
            version=described.to_dict(),
            model={"name": artifact.name, "media_type": artifact.media_type},
            sources=sources,
            chain=chain,
            evaluation=evaluation,
            reports=reports,
            gates=gates,
            parameters=parameters,
            limitations=modelcard.limitations(evaluation),
        )
