"""What is said about a registered model: its card, and whether a suspect carries its
watermark."""

from __future__ import annotations

import io
import json
from typing import Any

from ..db.models import ArtifactRow, AttestationRow
from ..errors import SealmlError
from ..governance import modelcard
from ..models import watermark
from .core import WATERMARK_SECRET
from .registry import ModelVersion, RegistryOperations, model_resource

CARD_REPORT = "model-card"


class ModelReportOperations(RegistryOperations):
    """``sealml model card`` and ``sealml model watermark-verify``."""

    def register_model(self, ref: str, name: str, *, evaluation: str | None = None) -> ModelVersion:
        """Register (see :meth:`RegistryOperations.register_model`), then seal the new
        version's model card (Markdown, from the verified records) beside the model."""
        version = super().register_model(ref, name, evaluation=evaluation)
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
        )
